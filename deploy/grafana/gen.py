#!/usr/bin/env python3
"""Writes deploy/grafana/rerank.json, the Grafana dashboard of rerank's
workers and gateway: python3 deploy/grafana/gen.py > deploy/grafana/rerank.json
(deploy_test.go checks every expression against the metrics really exported)."""
import json

panels = [
    # (title, unit, [(expr, legend)])
    ("Throughput: jobs settled", "reqps", [
        ('sum by (model, outcome) (rate(rerank_jobs_total[$__rate_interval]))', "{{model}} {{outcome}}")]),
    ("Throughput: pairs scored", "short", [
        ('sum by (model) (rate(rerank_pairs_scored_total[$__rate_interval]))', "{{model}} pairs/s")]),
    ("Backlog per model and lane", "short", [
        ('max by (model, lane) (rerank_backlog_jobs{state="pending"})', "{{model}} {{lane}} pending"),
        ('max by (model, lane) (rerank_backlog_jobs{state="unacked"})', "{{model}} {{lane}} in progress")]),
    ("Queue wait p50 / p99", "s", [
        ('histogram_quantile(0.5, sum by (model, le) (rate(rerank_queue_wait_seconds_bucket[$__rate_interval])))', "{{model}} p50"),
        ('histogram_quantile(0.99, sum by (model, le) (rate(rerank_queue_wait_seconds_bucket[$__rate_interval])))', "{{model}} p99")]),
    ("Job latency p50 / p99 (pull to settle)", "s", [
        ('histogram_quantile(0.5, sum by (model, le) (rate(rerank_job_duration_seconds_bucket[$__rate_interval])))', "{{model}} p50"),
        ('histogram_quantile(0.99, sum by (model, le) (rate(rerank_job_duration_seconds_bucket[$__rate_interval])))', "{{model}} p99")]),
    ("Lane wait p99 (scheduler)", "s", [
        ('histogram_quantile(0.99, sum by (model, lane, le) (rate(rerank_lane_wait_seconds_bucket[$__rate_interval])))', "{{model}} {{lane}}")]),
    ("Batch fill: pairs per ORT batch, jobs per call", "short", [
        ('sum by (model) (rate(rerank_batch_size_sum[$__rate_interval])) / sum by (model) (rate(rerank_batch_size_count[$__rate_interval]))', "{{model}} pairs/batch"),
        ('sum by (model) (rate(rerank_jobs_per_scoring_call_sum[$__rate_interval])) / sum by (model) (rate(rerank_jobs_per_scoring_call_count[$__rate_interval]))', "{{model}} jobs/call"),
        ('sum by (model) (rate(rerank_padding_ratio_sum[$__rate_interval])) / sum by (model) (rate(rerank_padding_ratio_count[$__rate_interval]))', "{{model}} padding ratio")]),
    ("Errors by code (dead letters)", "short", [
        ('sum by (model, code) (increase(rerank_dead_letters_total[$__rate_interval]))', "{{model}} {{code}}")]),
    ("Failed, invalid and retried jobs", "reqps", [
        ('sum by (model, outcome) (rate(rerank_jobs_total{outcome=~"invalid|failed|retry|abandoned"}[$__rate_interval]))', "{{model}} {{outcome}}")]),
    ("Redeliveries and panics", "reqps", [
        ('sum by (model) (rate(rerank_redeliveries_total[$__rate_interval]))', "{{model}} redeliveries"),
        ('sum by (model) (rate(rerank_job_panics_total[$__rate_interval]))', "{{model}} panics")]),
    ("Gateway request rate by status", "reqps", [
        ('sum by (endpoint, code) (rate(rerank_gateway_requests_total[$__rate_interval]))', "{{endpoint}} {{code}}")]),
    ("Gateway latency p50 / p99", "s", [
        ('histogram_quantile(0.5, sum by (endpoint, le) (rate(rerank_gateway_request_duration_seconds_bucket[$__rate_interval])))', "{{endpoint}} p50"),
        ('histogram_quantile(0.99, sum by (endpoint, le) (rate(rerank_gateway_request_duration_seconds_bucket[$__rate_interval])))', "{{endpoint}} p99")]),
    ("Workers: up, NATS connected, jobs in flight", "short", [
        ('sum(up{job="rerank"})', "workers up"),
        ('sum(rerank_nats_connected)', "connected to NATS"),
        ('sum(rerank_jobs_in_flight)', "jobs in flight")]),
    ("Worker memory (RSS)", "bytes", [
        ('process_resident_memory_bytes{job="rerank"}', "{{instance}}")]),
    ("Pair cache: hit rate, evictions", "percentunit", [
        ('sum(rate(rerank_score_cache_hits_total[$__rate_interval])) / (sum(rate(rerank_score_cache_hits_total[$__rate_interval])) + sum(rate(rerank_score_cache_misses_total[$__rate_interval])))', "hit rate"),
        ('sum(rate(rerank_score_cache_shared_total[$__rate_interval])) / (sum(rate(rerank_score_cache_hits_total[$__rate_interval])) + sum(rate(rerank_score_cache_misses_total[$__rate_interval])))', "shared with a job in flight"),
        ('sum(rate(rerank_score_cache_kv_hits_total[$__rate_interval])) / (sum(rate(rerank_score_cache_hits_total[$__rate_interval])) + sum(rate(rerank_score_cache_misses_total[$__rate_interval])))', "from the shared bucket"),
        ('sum(rate(rerank_score_cache_evictions_total[$__rate_interval])) / sum(rate(rerank_score_cache_misses_total[$__rate_interval]))', "evictions per miss")]),
]

out = []
for i, (title, unit, targets) in enumerate(panels):
    out.append({
        "id": i + 1,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [{"refId": chr(ord("A") + k), "expr": e, "legendFormat": l,
                     "datasource": {"type": "prometheus", "uid": "${datasource}"}} for k, (e, l) in enumerate(targets)],
    })

dashboard = {
    "title": "rerank",
    "uid": "rerank",
    "description": "rerank workers and HTTP gateway: throughput, backlog, latency, batching, errors (generated by deploy/grafana/gen.py)",
    "tags": ["rerank", "nats", "onnxruntime"],
    "schemaVersion": 39,
    "version": 1,
    "editable": True,
    "time": {"from": "now-6h", "to": "now"},
    "refresh": "30s",
    "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]},
    "panels": out,
}
print(json.dumps(dashboard, indent=2))
