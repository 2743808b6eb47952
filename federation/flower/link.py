"""The coordinator's view of the Flower grid: which SuperNode is which site, and round trips with a deadline.

Flower knows nodes by number; the consortium knows sites by name, and a site's
seed depends on its position in the consortium config. With node authentication
(the deployment default) a node is the site whose registered public key it
holds, so no site can pass for another. Without it (a quick look on loopback), a
node seen for the first time is asked (a `query` message) which site it is and
which consortium plan it was configured with; a node that answers for an unknown
site or another plan is refused for the run, and the reason logged (one that does
not answer in time, or claims a site another node still serves, is asked again
next round).
Every exchange has a reply timeout: a dead or hung node costs the round that
long, never the run. Replies are collected with Flower's `push_messages` and
`pull_messages` every `reply_poll_s` (Flower's own `send_and_receive` waits 3 s
between pulls, a fixed cost of up to 3 s per exchange); each message's send and
reply times go to `journal` (messages.jsonl in the run folder) when given.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flwr.app import Message, MessageType, RecordDict
from flwr.serverapp import Grid

from federation.flower.plan import ConsortiumPlan
from federation.flower.records import META
from federation.flower.timing import append_line
from federation.round_record import FAILED

log = logging.getLogger(__name__)

AGAIN = "no answer yet"
Reply = Message | str
"""A node's reply (which may carry an error), or why there is none."""


class SiteLink:
    def __init__(self, grid: Grid, plan: ConsortiumPlan, identify_timeout_s: float, ttl_s: float, site_keys: dict[str, bytes] | None = None,
                 reply_poll_s: float = 3.0, journal: Path | None = None):
        """`site_keys`: each site's public key (DER), when SuperNodes authenticate; None: ask nodes who they are."""
        self.grid, self.plan, self.site_keys = grid, plan, site_keys
        self.identify_timeout_s, self.ttl_s, self.reply_poll_s, self.journal = identify_timeout_s, ttl_s, reply_poll_s, journal
        self.node_site: dict[int, str] = {}
        self.refused: dict[int, str] = {}
        self.problems: dict[str, str] = {}
        """Per site: why a node that claimed it was refused (shown in the site's round outcome)."""

    def online(self) -> dict[str, int]:
        """Connected consortium sites (site -> node); nodes seen for the first time are asked who they are."""
        nodes = {info.node_id: info for info in self.grid.get_nodes()}
        for node in set(self.node_site) - set(nodes):
            log.info("site %r (node %d) is no longer connected", self.node_site.pop(node), node)
        new = sorted(set(nodes) - set(self.node_site) - set(self.refused))
        if new and self.site_keys is not None:
            self._identify_by_key({node: nodes[node] for node in new})
        elif new:
            self._identify(new)
        return {site: node for node, site in self.node_site.items()}

    def exchange(self, kind: str, contents: dict[str, RecordDict], nodes: dict[str, int], round_: int, timeout_s: float) -> dict[str, Reply]:
        """Send each site its content; per site, its reply or why there is none."""
        messages = {nodes[site]: Message(content, nodes[site], kind, ttl=self.ttl_s, group_id=str(round_)) for site, content in contents.items()}
        replies = self._round_trip(messages, timeout_s)
        return {site: replies[nodes[site]] for site in contents}

    def _identify_by_key(self, nodes: dict[int, object]) -> None:
        owners = {key: site for site, key in self.site_keys.items()}
        for node, info in nodes.items():
            site = owners.get(der_public_key(info.public_key)) if info.public_key else None
            if site is None:
                self.refused[node] = "its registered key belongs to no site of the consortium"
                log.warning("node %d refused for this run: %s", node, self.refused[node])
            else:
                self.node_site[node] = site
                log.info("node %d is site %r (by its key)", node, site)

    def _identify(self, nodes: list[int]) -> None:
        messages = {node: Message(RecordDict(), node, MessageType.QUERY, ttl=self.ttl_s, group_id="identify") for node in nodes}
        for node, reply in self._round_trip(messages, self.identify_timeout_s).items():
            site, problem = self._site_of(reply)
            if site:
                self.node_site[node] = site
                log.info("node %d is site %r", node, site)
            elif problem.startswith(AGAIN):
                log.warning("node %d: %s; asking again next round", node, problem)
            else:
                self.refused[node] = problem
                claimed = _claimed_site(reply)
                if claimed:
                    self.problems[claimed] = f"node {node} refused: {problem}"
                log.warning("node %d refused for this run: %s", node, problem)

    def _site_of(self, reply: Reply) -> tuple[str | None, str]:
        if isinstance(reply, str):
            return None, f"{AGAIN}: {reply}"
        if reply.has_error():
            return None, f"its ClientApp failed: {reply.error.reason}"
        meta = reply.content.config_records.get(META)
        site, plan = (meta.get("site"), meta.get("plan")) if meta is not None else (None, None)
        if site not in self.plan.sites:
            return None, f"it answered for site {site!r}, which is not in the consortium {list(self.plan.sites)}"
        if plan != self.plan.fingerprint:
            return None, f"site {site!r} runs another consortium plan ({plan}, the coordinator's: {self.plan.fingerprint})"
        if site in self.node_site.values():  # e.g. a restarted SuperNode while its old node still counts as connected
            return None, f"{AGAIN}: site {site!r} is already served by another node"
        return site, ""

    def _round_trip(self, messages: dict[int, Message], timeout_s: float) -> dict[int, Reply]:
        """Push the messages, then pull replies every `reply_poll_s` until all are in or `timeout_s` has passed."""
        deadline, sent = time.monotonic() + timeout_s, time.time()
        pushed = list(self.grid.push_messages(list(messages.values())))
        # message ids are set when pushed; a reply names the message it answers (even the SuperLink's own
        # error reply for a node that stopped sending heartbeats)
        node_of = {message.metadata.message_id: node for node, message in messages.items() if message.metadata.message_id in pushed}
        out: dict[int, Reply] = {node: "the SuperLink did not take the message" for node in messages}
        out |= {node: f"no reply within {timeout_s:g} s" for node in node_of.values()}
        replied: dict[int, float] = {}
        while len(replied) < len(node_of):
            for reply in self.grid.pull_messages([m for m, node in node_of.items() if node not in replied]):
                node = node_of.get(reply.metadata.reply_to_message_id)
                if node is None or node in replied:
                    log.warning("ignored a reply to a message this exchange did not send (or sent twice)")
                    continue
                out[node], replied[node] = reply, time.time()
            if len(replied) == len(node_of) or time.monotonic() >= deadline:
                break
            time.sleep(min(self.reply_poll_s, max(0.0, deadline - time.monotonic())))
        self._write_journal(messages, sent, replied)
        return out

    def _write_journal(self, messages: dict[int, Message], sent: float, replied: dict[int, float]) -> None:
        if self.journal is None:
            return
        for node, message in messages.items():
            append_line(self.journal, {"message_id": message.metadata.message_id, "node": node, "site": self.node_site.get(node),
                                       "kind": message.metadata.message_type, "group": message.metadata.group_id,
                                       "sent": sent, "replied": replied.get(node)})


def reply_problem(reply: Reply) -> tuple[str, str]:
    """Why a reply has no content to read (and the site's status then: failed), or ("", "")."""
    if isinstance(reply, str):
        return reply, FAILED
    if reply.has_error():
        return f"error reply (code {reply.error.code}): {reply.error.reason}", FAILED
    return "", ""


def _claimed_site(reply: Reply) -> str | None:
    if isinstance(reply, str) or not reply.has_content() or META not in reply.content.config_records:
        return None
    site = reply.content.config_records[META].get("site")
    return site if isinstance(site, str) else None


def der_public_key(pem: bytes) -> bytes:
    """A node's public key as the SuperLink stores it (PEM), in one comparable form."""
    return serialization.load_pem_public_key(pem).public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def load_site_keys(keys_dir: str | Path, sites: list[str]) -> dict[str, bytes]:
    """Each site's `<site>.pub` (OpenSSH, as made by scripts/make_certificates.sh), in the same form."""
    keys = {}
    for site in sites:
        path = Path(keys_dir) / f"{site}.pub"
        if not path.is_file():
            raise FileNotFoundError(f"no public key for site {site!r} at {path}")
        keys[site] = serialization.load_ssh_public_key(path.read_bytes()).public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return keys
