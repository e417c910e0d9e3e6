/** The status command's table: cells from clients (client ids, usernames) cannot drive the terminal. */
import t from 'tap';
import { table } from '../src/admin/status.ts';

t.test('control characters in cells are shown escaped: C0, DEL and C1 (CSI 0x9b)', async (t) => {
  const out = table(['ID', 'CLIENT ID'], [['1', 'a\u001b[31mred\u0007'], ['2', 'b\u009b2J\u007f\u0000']]);
  for (const line of out.split('\n')) t.notMatch(line, /\p{Cc}/u, 'no raw control character left in a line');
  t.match(out, /a\\x1b\[31mred\\x07/);
  t.match(out, /b\\x9b2J\\x7f\\x00/);
});

t.test('printable text is left alone and columns line up', async (t) => {
  const out = table(['NAME', 'BYTES'], [['é✓ client', '7'], ['x', '12345']], new Set([1]));
  t.equal(out, ['NAME       BYTES', 'é✓ client      7', 'x          12345'].join('\n'));
});
