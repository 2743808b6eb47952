"""A site's ClientApp processes forked from one that has already imported the stack (`deploy.clientapp.warm`).

Flower's SuperNode starts a fresh `flwr-clientapp` process for every message, and
a message's process spends seconds importing Lightning and torch before our code
runs (benchmarks/results/flower_rounds.md). Here the SuperNode runs with
`--isolation process` (Flower's documented mode for an external SuperExec) and
this module is that SuperExec: Flower's own loop (`run_superexec`) with one
difference, the executor. Instead of starting `flwr-clientapp`, it forks this
process, which imported the ClientApp once at start, and the child runs Flower's
own ClientApp runtime (`run_clientapp`) for the task. Each message still gets a
process of its own that ends with it (nothing of one message's state reaches the
next, as with Flower's executor); only the imports are shared, copy-on-write.

The parent never runs torch: a fork after torch has started its thread pools is
unsafe, a fork after importing it is not. It uses flwr internals (the executor
interface, `run_superexec`'s executor factory, `run_clientapp`) that flwr~=1.42
keeps; tests/deployment/test_flower_deployment.py runs a deployment through it.

    python -m federation.flower.warm_exec supervise --runtime-api-address 127.0.0.1:9094 -- flower-supernode ... --isolation process
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

MODULE = "federation.flower.warm_exec"
PRELOAD = ("federation.flower.client_app", "hydra.compose", "modalities.tables", "sklearn.model_selection")
"""What the parent imports before forking: the ClientApp and everything it pulls in, and what a first message
imports on the way (composing the config, the table loader and its split); importing starts no thread."""


class ForkExecutor:
    """Flower's executor interface (flwr.supercore.superexec.executor.types.Executor), a fork per task."""

    def __init__(self):
        self.children: set[int] = set()

    def get_eligible_capacity(self, supported_task_types, *, insecure=False, root_certificates_path=None):
        return supported_task_types, set()

    def wait_for_capacity(self, task_type=None, *, fab_hash=None, insecure=False, root_certificates_path=None) -> None:
        return None

    def launch(self, spec):
        from flwr.supercore.superexec.executor.types import LaunchResult

        pid = os.fork()
        if pid == 0:
            run_child(spec)  # never returns
        self.children.add(pid)
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        """Reap the children that have ended (no zombies)."""
        for pid in list(self.children):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.children.discard(pid)

    def close(self) -> None:
        self.reconcile()


def run_child(spec) -> None:
    """In the forked child: Flower's ClientApp runtime for this task, then exit without the parent's exit handlers."""
    code = 1
    try:
        from flwr.supercore.exit import exit_handler
        from flwr.supercore.tls import validate_and_resolve_root_certificates
        from flwr.supernode.runtime.run_clientapp import run_clientapp

        exit_handler.registered_exit_handlers.clear()  # the parent's (close its Runtime API client) are not ours
        certificates = validate_and_resolve_root_certificates(spec.root_certificates_path, spec.insecure)
        run_clientapp(runtime_api_address=spec.runtime_api_address, token=spec.token, insecure=spec.insecure,
                      certificates=certificates, parent_pid=spec.parent_pid, runtime_dependency_install=False)
        code = 0
    except SystemExit as done:  # flwr_exit ends the task with sys.exit
        code = done.code if isinstance(done.code, int) else 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(runtime_api_address: str, parent_pid: int | None) -> None:
    """Import the ClientApp once, then run Flower's SuperExec loop with the fork executor."""
    import importlib

    from flwr.supercore.superexec import run_superexec as superexec

    importlib.import_module(PRELOAD[0])  # the ClientApp: without it no message can run, so fail here
    for module in PRELOAD[1:]:
        try:
            importlib.import_module(module)
        except ImportError:  # a head start only: the message imports it (or fails) as without a warm process
            pass
    executor = ForkExecutor()
    superexec.get_executor = lambda *args, **kwargs: executor
    superexec.run_superexec(runtime_api_address=runtime_api_address, insecure=True, parent_pid=parent_pid,
                            runtime_dependency_install=False)


def supervise(runtime_api_address: str, supernode: list[str]) -> int:
    """The SuperNode and its warm SuperExec as one process to start and stop; the SuperNode's exit code.

    What watches a site (launch.follow_site, the tests) reads the SuperNode's exit code,
    so this process returns it; the SuperExec ends with its SuperNode (it watches its pid),
    and a SuperExec that dies (e.g. the ClientApp does not import) stops the SuperNode.
    """
    node = subprocess.Popen(supernode)
    server = subprocess.Popen([sys.executable, "-m", MODULE, "serve", "--runtime-api-address", runtime_api_address,
                               "--parent-pid", str(node.pid)])
    signal.signal(signal.SIGTERM, lambda *_: node.terminate())
    while node.poll() is None:
        if server.poll() is not None:  # no SuperExec, no message would ever run: stop the site, its log says why
            node.terminate()
        time.sleep(0.5)
    code = node.wait()
    server.terminate()
    try:
        server.wait(15)
    except subprocess.TimeoutExpired:
        server.kill()
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, supernode = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="supervise: the flower-supernode command follows --")
    parser.add_argument("mode", choices=["supervise", "serve"])
    parser.add_argument("--runtime-api-address", required=True, help="the SuperNode's Runtime API (host:port)")
    parser.add_argument("--parent-pid", type=int, default=None, help="serve: end when this process (the SuperNode) ends")
    args = parser.parse_args(own)
    if args.mode == "serve":
        serve(args.runtime_api_address, args.parent_pid)
        return 0
    if not supernode:
        parser.error("supervise needs the flower-supernode command after --")
    return supervise(args.runtime_api_address, supernode)


if __name__ == "__main__":
    sys.exit(main())
