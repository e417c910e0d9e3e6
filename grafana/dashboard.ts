/**
 * The Grafana dashboard of mqtt-liveness-proxy, built with the Grafana
 * Foundation SDK. grafana/build-dashboard.ts writes it to
 * grafana/mqtt-liveness-proxy.json; a test keeps that file equal to this.
 * Metric names: docs/METRICS-CONTRACT.md.
 */
import * as common from '@grafana/grafana-foundation-sdk/common';
import * as dashboard from '@grafana/grafana-foundation-sdk/dashboard';
import * as heatmap from '@grafana/grafana-foundation-sdk/heatmap';
import * as prometheus from '@grafana/grafana-foundation-sdk/prometheus';
import * as stat from '@grafana/grafana-foundation-sdk/stat';
import * as timeseries from '@grafana/grafana-foundation-sdk/timeseries';

export const DASHBOARD_UID = 'mqtt-liveness-proxy';

const DS: { type: string; uid: string } = { type: 'prometheus', uid: '${datasource}' };
/**
 * The matchers every selector carries. Every release is scraped as
 * job="mqtt-liveness-proxy" (the chart's ServiceMonitor), so the namespace
 * (and the instance, for two releases in one namespace) is what tells them apart.
 */
const SEL = 'namespace=~"$namespace", job=~"$job", instance=~"$instance"';
/** Reasons that are liveness verdicts (proxy/src/liveness/reasons.ts LIVENESS_REASONS). */
const VERDICT_REASONS = 'keepalive_timeout|tcp_keepalive|tcp_user_timeout|send_stall';

function query(expr: string, legend: string, refId: string): prometheus.DataqueryBuilder {
  return new prometheus.DataqueryBuilder().datasource(DS).expr(expr).legendFormat(legend).refId(refId).range();
}

interface Target {
  expr: string;
  legend: string;
}

function targetsOf(panel: { withTarget(t: prometheus.DataqueryBuilder): unknown }, targets: Target[]): void {
  targets.forEach((t, i) => panel.withTarget(query(t.expr, t.legend, String.fromCharCode(65 + i))));
}

let nextId = 1;

function series(opts: {
  title: string;
  description: string;
  unit: string;
  targets: Target[];
  width?: number;
  height?: number;
  stacked?: boolean;
  bars?: boolean;
  min?: number;
  max?: number;
}): timeseries.PanelBuilder {
  const p = new timeseries.PanelBuilder()
    .id(nextId++)
    .title(opts.title)
    .description(opts.description)
    .datasource(DS)
    .unit(opts.unit)
    .span(opts.width ?? 12)
    .height(opts.height ?? 8)
    .fillOpacity(opts.stacked ? 60 : 10)
    .lineWidth(1)
    .legend(new common.VizLegendOptionsBuilder().displayMode(common.LegendDisplayMode.List).placement(common.LegendPlacement.Bottom).showLegend(true))
    .tooltip(new common.VizTooltipOptionsBuilder().mode(common.TooltipDisplayMode.Multi).sort(common.SortOrder.Descending));
  if (opts.stacked) p.stacking(new common.StackingConfigBuilder().mode(common.StackingMode.Normal));
  if (opts.bars) p.drawStyle(common.GraphDrawStyle.Bars);
  if (opts.min !== undefined) p.min(opts.min);
  if (opts.max !== undefined) p.max(opts.max);
  targetsOf(p, opts.targets);
  return p;
}

function single(opts: {
  title: string;
  description: string;
  unit: string;
  targets: Target[];
  mappings?: dashboard.ValueMapping[];
  thresholds?: dashboard.Threshold[];
  width?: number;
}): stat.PanelBuilder {
  const p = new stat.PanelBuilder()
    .id(nextId++)
    .title(opts.title)
    .description(opts.description)
    .datasource(DS)
    .unit(opts.unit)
    .span(opts.width ?? 4)
    .height(4)
    .graphMode(common.BigValueGraphMode.Area)
    .colorMode(common.BigValueColorMode.Value)
    .reduceOptions(new common.ReduceDataOptionsBuilder().calcs(['lastNotNull']).values(false));
  if (opts.mappings) p.mappings(opts.mappings);
  if (opts.thresholds) p.thresholds(new dashboard.ThresholdsConfigBuilder().mode(dashboard.ThresholdsMode.Absolute).steps(opts.thresholds));
  targetsOf(p, opts.targets);
  return p;
}

function heat(opts: { title: string; description: string; unit: string; expr: string; repeat?: string }): heatmap.PanelBuilder {
  // A repeated panel spans the row; Grafana splits it among the repeats (maxPerRow).
  const p = new heatmap.PanelBuilder()
    .id(nextId++)
    .title(opts.title)
    .description(opts.description)
    .datasource(DS)
    .unit(opts.unit)
    .span(opts.repeat ? 24 : 12)
    .height(8)
    .calculate(false)
    .yAxis(new heatmap.YAxisConfigBuilder().unit(opts.unit))
    .rowsFrame(new heatmap.RowsHeatmapOptionsBuilder().layout(common.HeatmapCellLayout.Le))
    .color(new heatmap.HeatmapColorOptionsBuilder().mode(heatmap.HeatmapColorMode.Scheme).scheme('Oranges').scale(heatmap.HeatmapColorScale.Exponential).exponent(0.5).steps(64).fill('dark-orange').reverse(false))
    .withTarget(
      new prometheus.DataqueryBuilder().datasource(DS).expr(opts.expr).legendFormat('{{le}}').format(prometheus.PromQueryFormat.Heatmap).refId('A').range(),
    );
  if (opts.repeat) p.repeat(opts.repeat).repeatDirection('h').maxPerRow(3);
  return p;
}

function quantiles(metric: string, by: string, qs: number[], legendPrefix = ''): Target[] {
  return qs.map((q) => ({
    expr: `histogram_quantile(${q}, sum by (le${by ? `, ${by}` : ''}) (rate(${metric}_bucket{${SEL}}[$__rate_interval])))`,
    legend: `${legendPrefix}p${Math.round(q * 100)}${by ? ` {{${by}}}` : ''}`,
  }));
}

function row(title: string): dashboard.RowBuilder {
  return new dashboard.RowBuilder(title).id(nextId++);
}

const upDown: dashboard.ValueMapping[] = [
  { type: dashboard.MappingType.ValueToText, options: { '0': { text: 'down', color: 'red', index: 0 }, '1': { text: 'up', color: 'green', index: 1 } } },
];

function variable(name: string, label: string, query: string, description: string): dashboard.QueryVariableBuilder {
  return new dashboard.QueryVariableBuilder(name)
    .label(label)
    .description(description)
    .datasource(DS)
    .query({ query, refId: 'PrometheusVariableQueryEditor-VariableQuery', qryType: 1 })
    .definition(query)
    .refresh(dashboard.VariableRefresh.OnTimeRangeChanged)
    .sort(dashboard.VariableSort.AlphabeticalAsc)
    .multi(true)
    .includeAll(true)
    .allValue('.*')
    .current({ selected: true, text: ['All'], value: ['$__all'] });
}

export function buildDashboard(): dashboard.Dashboard {
  nextId = 1;
  const d = new dashboard.DashboardBuilder('MQTT liveness proxy')
    .uid(DASHBOARD_UID)
    .description('mqtt-liveness-proxy: how fast dead MQTT clients are detected, how much earlier than the broker, and the state of the proxy and its broker.')
    .tags(['mqtt', 'mqtt-liveness-proxy', 'mosquitto'])
    .editable()
    .tooltip(dashboard.DashboardCursorSync.Crosshair)
    .refresh('30s')
    .time({ from: 'now-3h', to: 'now' })
    .timezone('browser')
    .annotation(
      new dashboard.AnnotationQueryBuilder()
        .name('Annotations & Alerts')
        .datasource({ type: 'grafana', uid: '-- Grafana --' })
        .enable(true)
        .hide(true)
        .iconColor('rgba(0, 211, 255, 1)')
        .type('dashboard')
        .builtIn(1),
    )
    .withVariable(new dashboard.DatasourceVariableBuilder('datasource').label('Data source').type('prometheus').regex('').current({ selected: true, text: 'default', value: 'default' }))
    .withVariable(variable('namespace', 'Namespace', 'label_values(mqtt_liveness_build_info, namespace)', 'Kubernetes namespace of the proxies (the namespace label of the scrape; series without one match All).'))
    .withVariable(variable('job', 'Job', 'label_values(mqtt_liveness_build_info{namespace=~"$namespace"}, job)', 'Prometheus job of the proxies.'))
    .withVariable(variable('instance', 'Instance', 'label_values(mqtt_liveness_build_info{namespace=~"$namespace", job=~"$job"}, instance)', 'Proxy instances (pods).'))
    .withVariable(
      variable('reason', 'Verdict reason', `label_values(mqtt_liveness_detection_latency_seconds_bucket{${SEL}}, reason)`, 'Liveness verdict reasons (one latency heatmap each).'),
    );

  d.withRow(row('Overview'));
  d.withPanel(single({
    title: 'Broker',
    description: 'mqtt_liveness_broker_up: 1 while the canary session gets its PINGRESPs in time, for the worst selected instance.',
    unit: 'none',
    targets: [{ expr: `min(mqtt_liveness_broker_up{${SEL}})`, legend: 'broker' }],
    mappings: upDown,
    thresholds: [{ value: null, color: 'red' }, { value: 1, color: 'green' }],
  }));
  d.withPanel(single({
    title: 'Open connections',
    description: 'Client connections open through the proxy now (all selected instances).',
    unit: 'short',
    targets: [{ expr: `sum(mqtt_liveness_connections_open{${SEL}})`, legend: 'open' }],
  }));
  d.withPanel(single({
    title: 'Liveness verdicts',
    description: 'Dead or frozen clients cut by the proxy per minute (keepalive_timeout, tcp_keepalive, tcp_user_timeout, send_stall); each one makes the broker publish the Will at once.',
    unit: 'cpm',
    targets: [{ expr: `sum(rate(mqtt_liveness_disconnects_total{${SEL}, reason=~"${VERDICT_REASONS}"}[$__rate_interval])) * 60`, legend: 'verdicts/min' }],
  }));
  d.withPanel(single({
    title: 'Median detection latency',
    description: 'Median silence of a client (time since its last byte) when the proxy gave its verdict.',
    unit: 's',
    targets: quantiles('mqtt_liveness_detection_latency_seconds', '', [0.5]),
  }));
  d.withPanel(single({
    title: 'Median advantage over the broker',
    description: "Median of (the broker's own deadline, last packet + 1.5 x keep-alive) minus the verdict time: how much earlier the Will was published thanks to the proxy.",
    unit: 's',
    targets: quantiles('mqtt_liveness_detection_advantage_seconds', '', [0.5]),
  }));
  d.withPanel(single({
    title: 'Canary round trip (p99)',
    description: '99th percentile of the PINGREQ round trip of the canary session to the broker.',
    unit: 's',
    targets: quantiles('mqtt_liveness_broker_probe_rtt_seconds', '', [0.99]),
  }));

  d.withRow(row('Detection'));
  d.withPanel(series({
    title: 'Detection latency by reason',
    description: 'Percentiles of the silence (now minus the last byte from the client) at each liveness verdict, by reason. With the default policy this is about the keep-alive plus the grace.',
    unit: 's',
    targets: quantiles('mqtt_liveness_detection_latency_seconds', 'reason', [0.5, 0.9, 0.99]),
  }));
  d.withPanel(series({
    title: 'Advantage over the broker by reason',
    description: "The broker's own deadline (last client packet + 1.5 x the requested keep-alive) minus the verdict time, by reason. Positive: the proxy acted (and the Will went out) that much earlier.",
    unit: 's',
    targets: quantiles('mqtt_liveness_detection_advantage_seconds', 'reason', [0.1, 0.5, 0.9]),
  }));
  d.withPanel(series({
    title: 'Liveness verdicts by reason',
    description: 'Connections the proxy ended because the client was dead or frozen, per second, by reason.',
    unit: 'cps',
    stacked: true,
    bars: true,
    targets: [{ expr: `sum by (reason) (rate(mqtt_liveness_disconnects_total{${SEL}, reason=~"${VERDICT_REASONS}"}[$__rate_interval]))`, legend: '{{reason}}' }],
  }));
  d.withPanel(series({
    title: 'All disconnects by reason',
    description: 'Every connection end per second, by reason (client_disconnect and client_close are normal ends; broker_* come from the broker side).',
    unit: 'cps',
    stacked: true,
    targets: [{ expr: `sum by (reason) (rate(mqtt_liveness_disconnects_total{${SEL}}[$__rate_interval]))`, legend: '{{reason}}' }],
  }));

  d.withPanel(heat({
    title: 'Detection latency: $reason',
    description: 'Distribution of the silence at each liveness verdict with this reason (one panel per reason, from the Verdict reason variable).',
    unit: 's',
    expr: `sum by (le) (increase(mqtt_liveness_detection_latency_seconds_bucket{${SEL}, reason=~"$reason"}[$__rate_interval]))`,
    repeat: 'reason',
  }));
  d.withRow(row('Connections and keep-alive'));
  d.withPanel(series({
    title: 'Open connections',
    description: 'Client connections open now, per proxy instance.',
    unit: 'short',
    min: 0,
    targets: [{ expr: `sum by (instance) (mqtt_liveness_connections_open{${SEL}})`, legend: '{{instance}}' }],
  }));
  d.withPanel(series({
    title: 'Connections accepted and refused',
    description: 'New client connections per second, and CONNECTs the proxy refused, by reason (keep-alive policy, broker unreachable, admission limits).',
    unit: 'cps',
    targets: [
      { expr: `sum(rate(mqtt_liveness_connections_accepted_total{${SEL}}[$__rate_interval]))`, legend: 'accepted' },
      { expr: `sum by (reason) (rate(mqtt_liveness_connects_rejected_total{${SEL}}[$__rate_interval]))`, legend: 'refused: {{reason}}' },
    ],
  }));
  d.withPanel(heat({
    title: 'Requested keep-alive',
    description: 'Distribution of the keep-alive in the CONNECTs of new connections (all protocols).',
    unit: 's',
    expr: `sum by (le) (increase(mqtt_liveness_keepalive_requested_seconds_bucket{${SEL}}[$__rate_interval]))`,
  }));
  d.withPanel(series({
    title: 'Keep-alive requested and enforced',
    description: 'Median and 99th percentile of the keep-alive clients asked for, and of the one the proxy enforces after its policy (max, translate, assign).',
    unit: 's',
    targets: [
      ...quantiles('mqtt_liveness_keepalive_requested_seconds', '', [0.5, 0.99], 'requested '),
      ...quantiles('mqtt_liveness_keepalive_effective_seconds', '', [0.5, 0.99], 'enforced '),
    ],
  }));
  d.withPanel(series({
    title: 'Keep-alive clamps',
    description: 'Keep-alives lowered or assigned by the proxy per second, by MQTT protocol version.',
    unit: 'cps',
    width: 24,
    targets: [{ expr: `sum by (protocol) (rate(mqtt_liveness_keepalive_clamps_total{${SEL}}[$__rate_interval]))`, legend: 'MQTT {{protocol}}' }],
  }));

  d.withRow(row('Broker'));
  d.withPanel(series({
    title: 'Broker up',
    description: 'mqtt_liveness_broker_up per instance: 1 while the last canary probe succeeded in time, 0 when the broker stopped answering.',
    unit: 'none',
    min: 0,
    max: 1,
    targets: [{ expr: `max by (instance) (mqtt_liveness_broker_up{${SEL}})`, legend: '{{instance}}' }],
  }).mappings(upDown));
  d.withPanel(series({
    title: 'Canary round trip',
    description: 'Round trip of the canary probes to the broker (ping: PINGREQ/PINGRESP; publish: QoS 1 publish received back, if probes.deepTopic is set).',
    unit: 's',
    targets: quantiles('mqtt_liveness_broker_probe_rtt_seconds', 'probe', [0.5, 0.99]),
  }));
  d.withPanel(series({
    title: 'Canary probe failures',
    description: 'Failed canary probes per second, by probe and reason (timeout, connect, closed).',
    unit: 'cps',
    targets: [{ expr: `sum by (probe, reason) (rate(mqtt_liveness_broker_probe_failures_total{${SEL}}[$__rate_interval]))`, legend: '{{probe}} {{reason}}' }],
  }));
  d.withPanel(series({
    title: 'Injected PINGREQs and swallowed PINGRESPs',
    description: 'PINGREQs the proxy sent upstream on behalf of clients (translated keep-alives, upstream probes) and the PINGRESPs it removed from the broker-to-client stream.',
    unit: 'cps',
    targets: [
      { expr: `sum(rate(mqtt_liveness_injected_pingreqs_total{${SEL}}[$__rate_interval]))`, legend: 'injected PINGREQ' },
      { expr: `sum(rate(mqtt_liveness_swallowed_pingresps_total{${SEL}}[$__rate_interval]))`, legend: 'swallowed PINGRESP' },
    ],
  }));

  d.withRow(row('Traffic'));
  d.withPanel(series({
    title: 'Bytes relayed',
    description: 'Bytes relayed per second, by direction (to_broker, to_client).',
    unit: 'Bps',
    targets: [{ expr: `sum by (direction) (rate(mqtt_liveness_forwarded_bytes_total{${SEL}}[$__rate_interval]))`, legend: '{{direction}}' }],
  }));
  d.withPanel(series({
    title: 'Packets relayed',
    description: 'MQTT packets relayed per second, by direction and packet type.',
    unit: 'pps',
    targets: [{ expr: `sum by (direction, type) (rate(mqtt_liveness_forwarded_packets_total{${SEL}}[$__rate_interval]))`, legend: '{{direction}} {{type}}' }],
  }));
  d.withPanel(series({
    title: 'Frame errors',
    description: 'Malformed or refused frames from clients per second, by kind; each one closes its connection.',
    unit: 'cps',
    targets: [{ expr: `sum by (kind) (rate(mqtt_liveness_frame_errors_total{${SEL}}[$__rate_interval]))`, legend: '{{kind}}' }],
  }));

  d.withRow(row('Webhook events and process'));
  d.withPanel(series({
    title: 'Webhook deliveries',
    description: 'Webhook event deliveries per second by outcome, and events dropped (queue full or retries exhausted).',
    unit: 'cps',
    targets: [
      { expr: `sum by (outcome) (rate(mqtt_liveness_event_deliveries_total{${SEL}}[$__rate_interval]))`, legend: '{{outcome}}' },
      { expr: `sum(rate(mqtt_liveness_events_dropped_total{${SEL}}[$__rate_interval]))`, legend: 'dropped' },
    ],
  }));
  d.withPanel(series({
    title: 'Webhook queue',
    description: 'Events waiting for delivery, per instance.',
    unit: 'short',
    min: 0,
    targets: [{ expr: `max by (instance) (mqtt_liveness_event_queue_length{${SEL}})`, legend: '{{instance}}' }],
  }));
  d.withPanel(series({
    title: 'CPU',
    description: 'CPU time used by the proxy process, in cores.',
    unit: 'percentunit',
    targets: [{ expr: `sum by (instance) (rate(process_cpu_seconds_total{${SEL}}[$__rate_interval]))`, legend: '{{instance}}' }],
  }));
  d.withPanel(series({
    title: 'Memory and event loop',
    description: 'Resident memory of the proxy process; the event loop lag (p99) is on the right axis.',
    unit: 'bytes',
    targets: [
      { expr: `sum by (instance) (process_resident_memory_bytes{${SEL}})`, legend: 'RSS {{instance}}' },
      { expr: `max by (instance) (nodejs_eventloop_lag_p99_seconds{${SEL}})`, legend: 'event loop lag p99 {{instance}}' },
    ],
  }).overrideByRegexp('^event loop lag.*', [{ id: 'unit', value: 's' }, { id: 'custom.axisPlacement', value: 'right' }]));

  return d.build();
}

/** The dashboard as written to grafana/mqtt-liveness-proxy.json. */
export function dashboardJson(): string {
  return `${JSON.stringify(buildDashboard(), null, 2)}\n`;
}
