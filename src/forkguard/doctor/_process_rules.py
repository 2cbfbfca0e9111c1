"""The rules for the rest of the master process: its notes (preloading off, never forking),
its post-fork hooks, and the threads, sockets and event loops the import left behind."""

from __future__ import annotations

from typing import Any

from ._clients import CLIENTS
from ._rules import Context, Finding, Rule, always, every_match, first_match, install, sentence


def process_findings(facts: dict[str, Any], ctx: Context) -> list[Finding]:
    """Post-fork hooks, then threads, sockets and event loops."""
    findings = every_match(HOOK_RULES, facts.get("postfork_hooks") or [], ctx)
    findings += every_match(_THREAD_RULES, facts.get("threads") or [], ctx)
    findings += first_match(_SOCKET_RULES, facts.get("sockets") or [], ctx)
    findings += every_match(_LOOP_RULES, facts.get("event_loops") or [], ctx)
    return findings


def _hazard_severity(ctx: Context) -> str:
    """What the import leaves running is a hazard only if the workers inherit it."""
    return "warning" if ctx.preloaded else "info"


# ---- the master's notes -----------------------------------------------------------------------


def _not_preloaded(note: str, ctx: Context) -> bool:
    return not ctx.preloaded


def _not_preloaded_finding(note: str, ctx: Context) -> Finding:
    return Finding(
        kind="not-preloaded",
        severity="info",
        title=note,
        detail="Nothing the import opens is inherited by the workers.",
        fix=(
            f"Safe as it is. To preload (shared memory, fast worker starts) safely, {install(ctx)}."
        ),
    )


def _note_finding(note: str, ctx: Context) -> Finding:
    return Finding(kind="note", severity="info", title=note, detail="", fix="")


# The first rule that applies, for each note the master's config gave.
NOTE_RULES: tuple[Rule[str], ...] = (
    Rule(_not_preloaded, _not_preloaded_finding),
    Rule(always, _note_finding),
)


# ---- post-fork hooks --------------------------------------------------------------------------


def _calls_install(hook: dict[str, Any], ctx: Context) -> bool:
    return bool(hook.get("calls_install"))


def _late_install_finding(hook: dict[str, Any], ctx: Context) -> Finding:
    return Finding(
        kind="postfork-install",
        severity="info",
        title=f"post-fork hook {hook['name']} ({hook['source']}) calls forkguard.install()",
        detail=(
            "That works: each worker drops what it inherited when the hook runs. It is later "
            "than needed, and forkguard logs a warning in every worker asking to move it."
        ),
        fix=f"Move it into the master: {install(ctx)}.",
        location=hook.get("defined_at"),
        data=dict(hook),
    )


def _disposes_in_worker(hook: dict[str, Any], ctx: Context) -> bool:
    return bool(hook.get("calls_dispose")) and not hook.get("dispose_close_false")


def _postfork_dispose_finding(hook: dict[str, Any], ctx: Context) -> Finding:
    return Finding(
        kind="postfork-dispose",
        severity="warning" if ctx.preloaded and ctx.has_connections else "info",
        title=f"post-fork hook {hook['name']} ({hook['source']}) calls engine.dispose()",
        detail=(
            "dispose() in a worker closes the connections it inherited: each close "
            "sends COM_QUIT / Terminate over the socket the master and the other workers "
            "share, so their next query fails ('MySQL server has gone away'). A session "
            "still holding a connection is not reached at all."
        ),
        fix=(
            f"{sentence(install(ctx))} and remove this dispose() from the hook. "
            "Without forkguard: dispose the engine in the master, after the import-time "
            "work and before the fork."
        ),
        location=hook.get("defined_at"),
        data=dict(hook),
    )


# Every rule that applies, for each post-fork hook.
HOOK_RULES: tuple[Rule[dict[str, Any]], ...] = (
    Rule(_calls_install, _late_install_finding),
    Rule(_disposes_in_worker, _postfork_dispose_finding),
)


# ---- threads ----------------------------------------------------------------------------------


def _thread_finding(thread: dict[str, Any], ctx: Context) -> Finding:
    target = f" running {thread['target']}" if thread.get("target") else ""
    where = thread.get("started_at")
    return Finding(
        kind="thread-at-import",
        severity=_hazard_severity(ctx),
        title=f"thread {thread['name']!r}{target} is running after import",
        detail=(
            f"Started at {where or 'an unknown line'}. fork() copies only the calling "
            "thread: in the workers this thread does not exist, and a lock it held at "
            "the fork stays locked there forever (a deadlock on the first log line or "
            "queue put). Python 3.12+ warns when a multi-threaded process forks."
        ),
        fix=(
            "Start it in each worker after the fork (gunicorn `post_fork` / "
            "`post_worker_init` hook, `uwsgidecorators.postfork`) or lazily on first "
            "use, not at import."
        ),
        location=where,
        stack=thread.get("stack") or [],
        data={"name": thread["name"], "daemon": thread.get("daemon")},
    )


_THREAD_RULES: tuple[Rule[dict[str, Any]], ...] = (Rule(always, _thread_finding),)


# ---- sockets ----------------------------------------------------------------------------------


def _socket_finding(sock: dict[str, Any], ctx: Context, title: str, detail: str) -> Finding:
    where = sock.get("opened_at")
    return Finding(
        kind="socket-at-import",
        severity=_hazard_severity(ctx),
        title=title,
        detail=f"Opened at {where or 'an unknown line'}. {detail}",
        fix=(
            "Create the client per worker (post-fork hook) or lazily on first use, or "
            "close it before the fork."
        ),
        location=where,
        stack=sock.get("stack") or [],
        data={k: sock.get(k) for k in ("family", "type", "local", "peer", "listening")},
    )


def _family(sock: dict[str, Any]) -> str:
    return str(sock.get("family", "socket")).replace("AF_", "")


def _listening(sock: dict[str, Any], ctx: Context) -> bool:
    return bool(sock.get("listening"))


def _listening_finding(sock: dict[str, Any], ctx: Context) -> Finding:
    return _socket_finding(
        sock,
        ctx,
        f"listening {_family(sock)} socket on {sock.get('local')} is open after import",
        "Every worker inherits it and accepts on it too: connections land in whichever "
        "process wins, including ones that never serve them.",
    )


def _client_finding(sock: dict[str, Any], ctx: Context) -> Finding:
    return _socket_finding(
        sock,
        ctx,
        f"{_family(sock)} socket to {sock.get('peer') or '(unconnected)'} is open after import",
        "Every worker inherits the same socket: their messages interleave on one "
        "stream and one worker can read the reply meant for another (a cache, "
        "queue or HTTP client created at import).",
    )


def _from_known_client(sock: dict[str, Any], ctx: Context) -> bool:
    return sock.get("library") in CLIENTS


def _known_client_finding(sock: dict[str, Any], ctx: Context) -> Finding:
    client = CLIENTS[sock["library"]]
    finding = _socket_finding(
        sock,
        ctx,
        f"{client.name} connection to {sock.get('peer') or '(unconnected)'} is open after import",
        client.failure,
    )
    finding.kind = "client-at-import"
    finding.fix = client.fix
    finding.data["library"] = client.name
    if client.covered is None or (client.covered and ctx.forkguard_installed):
        finding.severity = "info"  # handled: by the library itself, or by forkguard
    return finding


# The first rule that applies, for each socket that is not a database connection's.
_SOCKET_RULES: tuple[Rule[dict[str, Any]], ...] = (
    Rule(_listening, _listening_finding),
    Rule(_from_known_client, _known_client_finding),
    Rule(always, _client_finding),
)


# ---- event loops ------------------------------------------------------------------------------


def _loop_finding(loop: dict[str, Any], ctx: Context) -> Finding:
    state = "running" if loop.get("running") else "created, not closed"
    return Finding(
        kind="event-loop",
        severity=_hazard_severity(ctx),
        title=f"an asyncio event loop ({loop['class']}) is {state} after import",
        detail=(
            "Its selector (epoll fd) and self-pipe are shared by every worker after the "
            "fork: workers steal each other's wake-ups, and a loop running in a thread "
            "is not running at all in the workers."
        ),
        fix=(
            "Create the loop in each worker (asyncio.run() or new_event_loop() after the "
            "fork), or close it (loop.close()) before the server forks."
        ),
        data=dict(loop),
    )


_LOOP_RULES: tuple[Rule[dict[str, Any]], ...] = (Rule(always, _loop_finding),)
