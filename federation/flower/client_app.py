"""The site's Flower ClientApp: thin handlers around `site_node` (one fresh process per message).

query: say which consortium site this node is; train: local training from the
global state, reply with the update; evaluate: the global model's metrics on
this site's held-out splits. Exceptions become error replies that carry the
reason to the coordinator's round record.
"""
from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from federation.flower.site_node import SiteNode, identify

app = ClientApp()


@app.query()
def query(message: Message, context: Context) -> Message:
    return Message(identify(context.run_config, context.node_config), reply_to=message)


@app.train()
def train(message: Message, context: Context) -> Message:
    node = SiteNode.from_context(context.run_config, context.node_config, context.state)
    return Message(node.train(message.content), reply_to=message)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    node = SiteNode.from_context(context.run_config, context.node_config, context.state)
    return Message(node.evaluate(message.content), reply_to=message)
