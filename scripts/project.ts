/**
 * Where the project lives, in one place: Chart.yaml's home/sources and every
 * alert's runbook_url in grafana/rules.yaml must start with these (tests check).
 */
export const REPO_URL = 'https://github.com/mqtt-liveness-proxy/mqtt-liveness-proxy';
/** docs/runbooks.md as rendered on the default branch; alerts append #<anchor>. */
export const RUNBOOKS_URL = `${REPO_URL}/blob/main/docs/runbooks.md`;
