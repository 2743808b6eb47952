"""The site's Flower ClientApp: thin handlers around `site_node` (one fresh process per message).

query: say which consortium site this node is; train: local training from the
global state, reply with the update (under secure aggregation: with a key
advert, the update staying here); train.secagg_share / _mask / _unmask: the
site's steps of secure aggregation (secagg.py); evaluate: the global model's
metrics on this site's held-out splits. Exceptions become error replies that
carry the reason to the coordinator's round record. Every reply passes the
egress check first (`egress_mod`); `timing_mod` records where the message's time
went (federation/flower/timing.py), on the site's disk only.

Every message imports this module afresh (unless forked from a warm process:
warm_exec.py), so it imports only what a site needs to train and evaluate:
nothing of the in-process experiment stack (federation.driver.experiment), no MONAI
unless the configured model builds an imaging encoder. Lightning is needed (Site
trains with its Trainer) and imports torchmetrics, which imports transformers
whenever it is installed; tests/deployment/test_flower.py checks that nothing else does.
"""
from __future__ import annotations

import time

from federation.flower import timing

timing.IMPORTS["imports_start"] = time.time()

from flwr.app import Context, Message  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402

from federation.flower import secagg  # noqa: E402
from federation.flower.egress import egress_mod  # noqa: E402
from federation.flower.site_node import SiteNode, identify  # noqa: E402

timing.IMPORTS["imports_done"] = time.time()
app = ClientApp(mods=[timing.timing_mod, egress_mod])


@app.query()
def query(message: Message, context: Context) -> Message:
    return Message(identify(context.run_config, context.node_config), reply_to=message)


@app.train()
def train(message: Message, context: Context) -> Message:
    node = SiteNode.from_context(context.run_config, context.node_config, context.state, context.run_id)
    return Message(node.train(message.content), reply_to=message)


@app.train("secagg_share")
def secagg_share(message: Message, context: Context) -> Message:
    return Message(secagg.step("share", message.content, context.state), reply_to=message)


@app.train("secagg_mask")
def secagg_mask(message: Message, context: Context) -> Message:
    return Message(secagg.step("mask", message.content, context.state), reply_to=message)


@app.train("secagg_unmask")
def secagg_unmask(message: Message, context: Context) -> Message:
    return Message(secagg.step("unmask", message.content, context.state), reply_to=message)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    node = SiteNode.from_context(context.run_config, context.node_config, context.state, context.run_id)
    return Message(node.evaluate(message.content), reply_to=message)
