// A server-sent events parser (the WHATWG "event stream" format), fed text as it arrives. Chunks
// may split anything: a field, a line ending (a CR at the end of one chunk and its LF at the start
// of the next), an event. Lines end with CRLF, LF or CR; a line starting with ":" is a comment (a
// keep-alive); `retry:` is the reconnect delay the server suggests; unknown fields are ignored;
// an event without data is not dispatched; an event cut off by the end of the stream is dropped.
//
// One event's text is bounded (`eventCharsMax`), so a node that never ends an event cannot make the
// parser buffer without limit.

export interface SseEvent {
  /** The `event:` field; "message" when the event named none. */
  readonly event: string;
  /** The `data:` lines, joined with "\n". */
  readonly data: string;
  /**
   * The `id:` of this event, or undefined when this event carried none. (Unlike EventSource's
   * lastEventId, an id does not carry over to later events: the watch resumes from revisions it
   * decoded, and a reset chunk without an id must not look like a place to resume from.)
   */
  readonly id: string | undefined;
}

export class SseEventTooLargeError extends Error {
  constructor(readonly eventCharsMax: number) {
    super(`a server-sent event exceeds ${eventCharsMax} characters without ending; raise responseBytesMax if events this large are expected`);
    this.name = "SseEventTooLargeError";
  }
}

const RETRY_VALUE = /^[0-9]+$/;

export class SseParser {
  /** The server's suggested reconnect delay, the last `retry:` seen. The watch uses its own backoff instead. */
  retryMs: number | undefined;
  /** The current line, when no line ending has arrived for it yet. */
  private partialLine = "";
  /** The previous chunk ended with CR: an LF starting the next one belongs to that line ending. */
  private skipLeadingLf = false;
  private atStreamStart = true;
  private eventType = "";
  private dataLines: string[] = [];
  private id: string | undefined;
  /** Characters of the event so far: its data lines and the line being read. */
  private eventChars = 0;
  /** Finds line endings; its own, as a global regex carries its position between calls. */
  private readonly lineEnd = /[\r\n]/g;

  constructor(private readonly eventCharsMax: number) {
    if (!Number.isSafeInteger(eventCharsMax) || eventCharsMax < 1) throw new RangeError(`eventCharsMax ${eventCharsMax} must be a whole number >= 1`);
  }

  /** Parses the next piece of the stream; returns the events it completed, in order. */
  feed(chunk: string): SseEvent[] {
    const events: SseEvent[] = [];
    let pos = 0;
    if (this.atStreamStart && chunk.length > 0) {
      this.atStreamStart = false;
      if (chunk.charCodeAt(0) === 0xfeff) pos = 1;
    }
    if (this.skipLeadingLf && pos < chunk.length) {
      this.skipLeadingLf = false;
      if (chunk.charCodeAt(pos) === 0x0a) pos++;
    }
    this.lineEnd.lastIndex = pos;
    while (pos < chunk.length) {
      const found = this.lineEnd.exec(chunk);
      if (found === null) {
        this.partialLine += chunk.slice(pos);
        this.eventChars += chunk.length - pos;
        if (this.eventChars > this.eventCharsMax) throw new SseEventTooLargeError(this.eventCharsMax);
        break;
      }
      const end = found.index;
      const line = this.partialLine + chunk.slice(pos, end);
      this.eventChars += end - pos;
      this.partialLine = "";
      if (this.eventChars > this.eventCharsMax) throw new SseEventTooLargeError(this.eventCharsMax);
      pos = end + 1;
      if (chunk.charCodeAt(end) === 0x0d) {
        if (pos === chunk.length) this.skipLeadingLf = true;
        else if (chunk.charCodeAt(pos) === 0x0a) pos++;
      }
      this.lineEnd.lastIndex = pos;
      const event = this.line(line);
      if (event !== undefined) events.push(event);
    }
    return events;
  }

  private line(line: string): SseEvent | undefined {
    if (line === "") return this.dispatch();
    if (line.charCodeAt(0) === 0x3a) return undefined; // ":" starts a comment
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.charCodeAt(0) === 0x20) value = value.slice(1);
    switch (field) {
      case "event":
        this.eventType = value;
        break;
      case "data":
        this.dataLines.push(value);
        break;
      case "id":
        if (!value.includes("\0")) this.id = value;
        break;
      case "retry":
        if (RETRY_VALUE.test(value)) this.retryMs = Number(value);
        break;
      default:
        break;
    }
    return undefined;
  }

  private dispatch(): SseEvent | undefined {
    const event: SseEvent | undefined = this.dataLines.length === 0
      ? undefined
      : { event: this.eventType === "" ? "message" : this.eventType, data: this.dataLines.join("\n"), id: this.id };
    this.eventType = "";
    this.dataLines = [];
    this.id = undefined;
    this.eventChars = 0;
    return event;
  }
}
