"""Prometheus metrics. Engine counters are read at scrape time (nothing extra
on the decision path); call counts and latencies come from the interceptor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from server.protocol import ServingEngine

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class _EngineCollector:
    def __init__(self, engine: "ServingEngine"):
        self.engine = engine

    def collect(self) -> Iterator:
        st = self.engine.stats()
        counters = {
            "placement_decisions": ("Decisions served and logged.", st.decisions),
            "placement_rewards": ("Rewards accepted and logged.", st.rewards),
            "placement_activations": ("Deferred decisions activated.", st.activations),
            "placement_bad_requests": ("Requests refused for what they asked.", st.bad_requests),
            "placement_joined": ("Decisions joined with their rewards.", st.joined),
            "placement_joined_with_reward": ("Joined decisions with at least one reward.", st.joined_with_reward),
            "placement_default_reward_applied": ("Slots joined with the default reward.", st.default_reward_applied),
            "placement_unactivated_dropped": ("Deferred decisions never activated.", st.unactivated_dropped),
            "placement_join_failed": ("Decisions that could not be joined (logged; their batch went on).",
                                      st.join_failed),
            "placement_unserved_dropped": ("Decisions whose caller's deadline passed while they were made: "
                                           "logged as unserved, never learned.", st.unserved_dropped),
            "placement_pending_refused": ("Decides refused: limits.max_pending_decisions were pending.",
                                          st.pending_refused),
            "placement_explain_ablations": ("Feature ablations computed for explain=true.", st.explain_ablations),
            "placement_explains_truncated": ("Explanations cut short by their bounds.", st.explains_truncated),
            "placement_learner_errors": ("Joined examples the learner could not learn.", st.learner_errors),
            "placement_learn_subsampled": ("Joined decisions left out of the joined log and of learning by "
                                           "learner.sample_rate.", st.learn_subsampled),
        }
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(name, doc, value=value)
        rejected = CounterMetricFamily("placement_rewards_rejected", "Rewards refused.", labels=["reason"])
        rejected.add_metric(["unknown_event"], st.rewards_rejected_unknown)
        rejected.add_metric(["expired"], st.rewards_rejected_expired)
        yield rejected
        yield GaugeMetricFamily("placement_pending_decisions", "Decisions waiting for their join.",
                                value=st.pending)
        gauges = {
            "placement_learn_backlog_items": ("Joined decisions waiting for the learner.", st.learn_backlog_items),
            "placement_learn_backlog_bytes": ("Bytes of the joined decisions waiting for the learner.",
                                              st.learn_backlog_bytes),
            "placement_learn_backlog_limit_bytes": ("learner.max_backlog_bytes: when the backlog is full, joins "
                                                    "wait and decisions stay pending.", st.learn_backlog_limit_bytes),
            "placement_learner_events_per_second": ("Examples learned per second, the last 10 s.",
                                                    st.learner_events_per_second),
        }
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(name, doc, value=value)
        version = GaugeMetricFamily("placement_model_version", "Serving model version.", labels=["surface"])
        learned = GaugeMetricFamily("placement_examples_learned", "Examples in the learner.", labels=["surface"])
        lag = GaugeMetricFamily("placement_learner_lag_seconds",
                                "Age of the newest decision the learner has learned.", labels=["surface"])
        for s in st.surfaces:
            version.add_metric([s.surface], float(s.model_version))
            learned.add_metric([s.surface], s.examples_learned)
            lag.add_metric([s.surface], s.learner_lag_seconds)
        yield from (version, learned, lag)


class Metrics:
    """One registry per server, so several servers in one process stay apart."""

    def __init__(self, engine: "ServingEngine"):
        self.registry = CollectorRegistry()
        self.registry.register(_EngineCollector(engine))
        self.calls = Counter("placement_rpc", "gRPC calls by method and status.", ["method", "code"],
                             registry=self.registry)
        self.latency = Histogram("placement_rpc_seconds", "gRPC call latency.", ["method"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self._http = None

    def observe_call(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        self.calls.labels(method, code.name).inc()
        self.latency.labels(method).observe(seconds)

    def serve(self, host: str, port: int) -> int:
        """Expose /metrics over HTTP; returns the bound port."""
        self._http, _ = start_http_server(port, addr=host, registry=self.registry)
        return self._http.server_port

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
