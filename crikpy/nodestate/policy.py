"""Combines the node-state sources: what a SIGTERM means, and whether a notice has come.

`decide()` asks the enabled sources in their configured order, all within one short timeout:
the first that says "leaving" decides; none saying so (or none answering in time) means "not
leaving", and the workload shuts down normally. `NoticeWatcher` polls the cloud sources in the
background and reports the first definite interruption notice.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Protocol

from crikpy import log
from crikpy.nodestate import Answer, Unavailable
from crikpy.nodestate.query import within
from crikpy.settings import Settings

CLOUD_SOURCES = ("aws", "gcp", "azure")
_log = log.get()


class Source(Protocol):
    name: str

    def leaving(self, timeout: float) -> Answer: ...


def build_sources(s: Settings) -> list[Source]:
    """The sources `s.node_state_sources` names, in that order, configured from `s`."""
    from crikpy.nodestate.aws import AwsSource  # noqa: PLC0415
    from crikpy.nodestate.azure import AzureSource  # noqa: PLC0415
    from crikpy.nodestate.crik import CrikSource  # noqa: PLC0415
    from crikpy.nodestate.gcp import GcpSource  # noqa: PLC0415
    from crikpy.nodestate.kubernetes import KubernetesSource  # noqa: PLC0415

    sources: list[Source] = []
    for name in s.node_state_sources:
        if name == "kubernetes":
            sources.append(KubernetesSource(s.kubernetes_api_url, s.node_name,
                                            Path(s.kubernetes_token_path),
                                            Path(s.kubernetes_ca_path)))
        elif name == "crik":
            sources.append(CrikSource(s.node_state_server_url, s.node_name))
        elif name == "aws":
            sources.append(AwsSource(s.aws_imds_url))
        elif name == "gcp":
            sources.append(GcpSource(s.gcp_metadata_url))
        elif name == "azure":
            sources.append(AzureSource(s.azure_metadata_url))
    return sources


def decide(sources: list[Source], timeout: float) -> Answer | None:
    """Is the node leaving? The deciding Answer; None when no source answered in time."""
    deadline = time.monotonic() + timeout
    answered: list[Answer] = []
    for source in sources:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            # A source may make several requests (AWS: a token, then the notices), each
            # bounded on its own: the decision as a whole must be too.
            answer = within(left, lambda: source.leaving(left), source.name)
        except Unavailable as e:
            _log.info("node_state.unavailable", source=source.name, detail=str(e))
            continue
        except Exception as e:  # noqa: BLE001  (a source that fails oddly has not answered)
            _log.warning("node_state.unavailable", source=source.name,
                         detail=f"{type(e).__name__}: {e}")
            continue
        if answer.leaving:
            return answer
        answered.append(answer)
    if not answered:
        return None
    return Answer(False, ",".join(a.source for a in answered),
                  "; ".join(a.detail for a in answered))


class NoticeWatcher:
    """Polls cloud sources' `notice()` every `interval` seconds in a daemon thread."""

    def __init__(self, sources: list, interval: float, timeout: float = 2.0) -> None:
        self.sources = [s for s in sources if s.name in CLOUD_SOURCES]
        self.interval, self.timeout = interval, timeout
        self.notice: str | None = None
        self.source: str | None = None
        self.seen_at: float | None = None  # time.monotonic() of the first notice
        self._stop = threading.Event()
        self._unavailable_logged: set[str] = set()

    def start(self) -> "NoticeWatcher":
        if self.sources:
            threading.Thread(target=self._run, name="notice-watcher", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            for source in self.sources:
                try:
                    notice = within(self.timeout, lambda: source.notice(self.timeout),
                                    source.name)
                except Exception as e:  # noqa: BLE001  (the watcher must outlive any answer)
                    if source.name not in self._unavailable_logged:  # say so once, not per poll
                        self._unavailable_logged.add(source.name)
                        _log.warning("notice.source_unavailable", source=source.name,
                                     detail=str(e) if isinstance(e, Unavailable)
                                     else f"{type(e).__name__}: {e}")
                    continue
                if notice:
                    self.source, self.notice = source.name, notice
                    self.seen_at = time.monotonic()
                    _log.warning("notice.received", source=source.name, notice=notice)
                    return
            self._stop.wait(self.interval)
