/** MQTT protocol levels as people name them: 3 -> '3.1', 4 -> '3.1.1', 5 -> '5'. */
export type ProtocolLabel = '3.1' | '3.1.1' | '5';

export function protocolLabel(level: number | null | undefined): ProtocolLabel | null {
  return level === 3 ? '3.1' : level === 4 ? '3.1.1' : level === 5 ? '5' : null;
}
