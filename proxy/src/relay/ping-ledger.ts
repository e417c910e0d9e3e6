/**
 * Whose PINGRESP is it? The broker answers PINGREQs in order, and some of the
 * PINGREQs on a connection were the client's while others were injected by the
 * proxy to probe the broker. The ledger remembers who sent each one still
 * unanswered, so a PINGRESP owed to the proxy is swallowed and never reaches
 * the client, and one owed to the client passes through untouched.
 *
 * While no injected PINGREQ is in flight, every PINGRESP is the client's and
 * streams through without being held (the hot path stays copy-free).
 */
const FROM_CLIENT = 0;
const FROM_PROXY = 1;

export class PingLedger {
  /** Senders of the PINGREQs not answered yet, oldest first. */
  private readonly unanswered: number[] = [];
  /** How many of them the proxy sent. */
  proxyInFlight = 0;

  /** The client sent a PINGREQ upstream. */
  clientPinged(): void {
    this.unanswered.push(FROM_CLIENT);
  }

  /** The proxy injected a PINGREQ upstream. */
  proxyPinged(): void {
    this.unanswered.push(FROM_PROXY);
    this.proxyInFlight++;
  }

  /**
   * A PINGRESP header arrived from the broker. False: it is the client's, pass
   * it on (already accounted for). True: hold it whole and call answeredProxy().
   */
  mustHold(): boolean {
    if (this.proxyInFlight > 0) return true;
    this.unanswered.shift();
    return false;
  }

  /** A held PINGRESP: true when it answers the proxy's PINGREQ (drop it), false when the client's (pass it on). */
  answeredProxy(): boolean {
    if (this.unanswered.shift() !== FROM_PROXY) return false;
    this.proxyInFlight--;
    return true;
  }
}
