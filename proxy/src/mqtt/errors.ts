/** Stable error codes, so logs, metrics and tests can rely on them. */
export type FrameErrorCode =
  | 'MLP_MALFORMED_LENGTH'
  | 'MLP_FRAME_TOO_LARGE'
  | 'MLP_RESERVED_TYPE'
  | 'MLP_REJECTED'
  | 'MLP_DECODE';

/** The bounded `kind` label each code is counted under. */
export const frameErrorKind: Record<FrameErrorCode, string> = {
  MLP_MALFORMED_LENGTH: 'malformed_length',
  MLP_FRAME_TOO_LARGE: 'too_large',
  MLP_RESERVED_TYPE: 'reserved_type',
  MLP_REJECTED: 'unexpected_packet',
  MLP_DECODE: 'decode',
};

export class FrameError extends Error {
  readonly kind: string;
  constructor(readonly code: FrameErrorCode, message: string) {
    super(message);
    this.name = 'FrameError';
    this.kind = frameErrorKind[code];
  }
}
