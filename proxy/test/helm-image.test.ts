/**
 * The Dockerfile and the chart agree (user, ports, entrypoint, WORKDIR, base
 * images). The image itself is built with buildah and run with podman in
 * image.test.ts.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT, findObject, render } from '../../scripts/helm.ts';

const dockerfile = readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');

/** The runtime stage: everything after the last FROM. */
const runtime = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));

t.test('Dockerfile and chart agree', async (t) => {
  t.match(dockerfile, /^ARG NODE_VERSION=(2[2-9]|[3-9]\d)$/m, 'a current Node LTS line');
  t.match(dockerfile, /^ARG BUILD_IMAGE=node:\$\{NODE_VERSION\}-bookworm$/m, 'builds from the public node image by default');
  t.match(dockerfile, /^ARG RUNTIME_IMAGE=node:\$\{NODE_VERSION\}-bookworm-slim$/m, 'runs on the slim node image by default');
  t.match(dockerfile, /^FROM \$\{BUILD_IMAGE\} AS build$/m, 'multi-stage: a build stage');
  t.match(dockerfile, /npm run build/, 'compiles dist/');
  t.match(dockerfile, /npm prune --omit=dev/, 'production dependencies only');
  t.match(runtime, /^FROM \$\{RUNTIME_IMAGE\} AS runtime$/m);
  t.match(runtime, /^WORKDIR \/app$/m);
  const user = /^USER (\d+):(\d+)$/m.exec(runtime);
  t.ok(user && Number(user[1]) > 0, 'numeric non-root USER');
  const objects = render({});
  const w = objects.find((o) => o.kind === 'Deployment') as unknown as { spec: { template: { spec: { containers: Array<{ name: string; command: string[]; securityContext: { runAsUser: number }; ports: Array<{ containerPort: number }> }> } } } };
  const proxy = w.spec.template.spec.containers.find((c) => c.name === 'proxy')!;
  t.equal(proxy.securityContext.runAsUser, Number(user?.[1]), 'the chart runs as the image user');
  const entrypoint = /^ENTRYPOINT (\[.*\])$/m.exec(runtime);
  t.same(entrypoint ? JSON.parse(entrypoint[1]) : null, proxy.command, 'the chart command is the image ENTRYPOINT');
  const exposed = (/^EXPOSE (.+)$/m.exec(runtime)?.[1] ?? '').split(/\s+/).map(Number);
  t.same(exposed.sort(), proxy.ports.map((p) => p.containerPort).sort(), 'EXPOSE = the chart container ports');
  findObject(objects, 'ConfigMap', (o) => o.metadata.name.endsWith('-proxy'));
});
