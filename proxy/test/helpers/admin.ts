/** The admin endpoints of a test proxy, as a test reads them. */
import { request } from 'undici';
import type { ReadyBody } from '../../src/admin/server.ts';
import type { TestProxy } from './proxy.ts';

export async function readyz(proxy: TestProxy): Promise<{ status: number; body: ReadyBody }> {
  const res = await request(`${proxy.adminUrl}/readyz`);
  return { status: res.statusCode, body: (await res.body.json()) as ReadyBody };
}

export async function metricsText(proxy: TestProxy): Promise<string> {
  const res = await request(`${proxy.adminUrl}/metrics`);
  return res.body.text();
}
