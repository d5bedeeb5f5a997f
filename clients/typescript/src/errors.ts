/** Why an operation failed. Every error of this package is an {@link InvalidatorError}. */
export class InvalidatorError extends Error {
  /** `not_connected`, `timeout`, `closed`, `connect_failed`, or the server's error code. */
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = "InvalidatorError";
    this.code = code;
  }
}

/** The server refused the operation with an `error` frame (e.g. `forbidden`, `invalid_pattern`). */
export class ServerError extends InvalidatorError {
  constructor(code: string, message: string) {
    super(code, `the server refused the operation: ${code}: ${message}`);
    this.name = "ServerError";
  }
}

export class NotConnectedError extends InvalidatorError {
  constructor() {
    super("not_connected", "not connected");
    this.name = "NotConnectedError";
  }
}

export class TimeoutError extends InvalidatorError {
  constructor(ms: number) {
    super("timeout", `no reply from the server within ${ms} ms`);
    this.name = "TimeoutError";
  }
}

export class ClosedError extends InvalidatorError {
  constructor() {
    super("closed", "the client has been closed");
    this.name = "ClosedError";
  }
}

export class ConnectError extends InvalidatorError {
  constructor(url: string, message: string) {
    super("connect_failed", `cannot connect to ${url}: ${message}`);
    this.name = "ConnectError";
  }
}
