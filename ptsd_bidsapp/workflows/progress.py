"""Progress of the participant graph: nipype's ``status_callback`` and a heartbeat.

:class:`GraphProgress` is called by the local plugins (Linear, MultiProc) in the main process
when a node starts, ends (also when its result was cached) or raises. It

* writes a line per finished run, session and subject (sink) node with the counts and the
  elapsed time (a bar in front when stderr is a terminal);
* records, per subject, the nodes that raised in this run (the sink and report nodes write the
  derivative files: when one crashes the subject failed even if files of an earlier run remain);
* with ``--resource-monitor``, keeps each node's run time, peak memory and CPU use (from
  nipype's resource monitor, in the node's result) for a TSV.

A heartbeat thread writes a line every ``heartbeat`` seconds while nodes are running, so that
a long node (a DCM fit) never leaves the console silent for longer.
"""

from __future__ import annotations

import logging
import threading
import time

from ptsd_bidsapp.progress import bar, format_elapsed, on_terminal

LOGGER = logging.getLogger("ptsd_bidsapp.progress")

#: Node kinds reported, by interface class name.
REPORTED = {"RunMeasures": "run", "SessionMeasures": "session", "DerivativesSink": "subject"}


def _subject_of(node) -> str | None:
    for part in str(getattr(node, "fullname", node)).split("."):
        if part.startswith("sub_") and part.endswith("_wf"):
            return part[len("sub_"):-len("_wf")]
    return None


class GraphProgress:
    """nipype ``status_callback`` (see module docstring).

    Parameters
    ----------
    totals : dict
        Expected number of ``run``, ``session`` and ``subject`` nodes.
    resource_monitor : bool
        Collect run time, memory and CPU of every node (:attr:`resources`).
    heartbeat : float
        Seconds between "still running" lines; 0 disables the thread.
    """

    def __init__(self, totals: dict, resource_monitor: bool = False, heartbeat: float = 30.0):
        self.totals = {k: int(totals.get(k, 0)) for k in ("run", "session", "subject")}
        self.done = {k: 0 for k in self.totals}
        self.failed_nodes = 0
        self.by_subject: dict[str, list[str]] = {}
        self.running: dict[str, float] = {}
        self.resources: list[dict] = []
        self.resource_monitor = resource_monitor
        self.reported = False
        self.start = time.monotonic()
        self.last_line = self.start
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        if heartbeat > 0:
            self._thread = threading.Thread(target=self._beat, args=(float(heartbeat),), daemon=True,
                                            name="ptsd_bidsapp-heartbeat")
            self._thread.start()

    # ------------------------------------------------------------------ nipype API
    def __call__(self, node, status: str) -> None:
        kind = REPORTED.get(type(getattr(node, "interface", None)).__name__)
        name = str(getattr(node, "fullname", node))
        with self._lock:
            self.reported = True
            if status == "start":
                self.running[name] = time.monotonic()
                return
            started = self.running.pop(name, None)
            if status == "exception":
                self.failed_nodes += 1
                subject = _subject_of(node)
                if subject is not None:
                    self.by_subject.setdefault(subject, []).append(node.name)
                self._line(f"FAILED {self._label(node)} (see the crash file in the work dir)", logging.WARNING)
                return
            if status != "end":
                return
            if self.resource_monitor:
                self._record_resources(node, started)
            if kind is None:
                return
            self.done[kind] += 1
            what = {"run": "run measures", "session": "session summary + DCM", "subject": "outputs written"}[kind]
            self._line(f"{self._label(node)}: {what}")

    # ------------------------------------------------------------------ helpers
    def counts(self) -> str:
        """``"12/40 runs, 3/16 sessions, 1/8 subjects"``."""
        return ", ".join(f"{self.done[k]}/{self.totals[k]} {k}s" for k in ("run", "session", "subject"))

    def _label(self, node) -> str:
        subject = _subject_of(node)
        return f"sub-{subject} {node.name}" if subject else str(node.name)

    def _line(self, text: str, level: int = logging.INFO) -> None:
        now = time.monotonic()
        self.last_line = now
        total = sum(self.totals.values())
        prefix = bar(sum(self.done.values()), total) + " " if on_terminal() and total else ""
        LOGGER.log(level, "%s[%s | %s] %s", prefix, self.counts(), format_elapsed(now - self.start), text)

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(min(interval, 1.0)):
            with self._lock:
                if time.monotonic() - self.last_line < interval:
                    continue
                running = sorted(self.running, key=self.running.get)
                shown = ", ".join(n.split(".", 1)[-1] for n in running[:3]) + (" …" if len(running) > 3 else "")
                if running:
                    self._line(f"running: {len(running)} node(s): {shown}")
                elif not self.reported:
                    self._line("still working (this plugin reports no per-node status; see the scheduler)")
                else:
                    self._line("waiting for the next node")

    def _record_resources(self, node, started: float | None) -> None:
        try:
            runtime = node.result.runtime
        except Exception:  # noqa: BLE001 - a node without a readable result has nothing to record
            return
        runtime = runtime[0] if isinstance(runtime, list) and runtime else runtime
        self.resources.append({
            "node": str(getattr(node, "fullname", node)),
            "interface": type(getattr(node, "interface", None)).__name__,
            "duration_s": getattr(runtime, "duration", None),
            "mem_peak_gb": getattr(runtime, "mem_peak_gb", None),
            "cpu_percent": getattr(runtime, "cpu_percent", None),
            "cached": started is None,
        })

    def stop(self) -> None:
        """Stop the heartbeat thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
