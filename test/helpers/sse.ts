/** A Server-Sent Events stream read with fetch: the `{ event, data }` frames so far (data parsed as JSON). */
export interface SseReader {
  readonly frames: Array<{ event: string; data: any }>;
  /** The response's headers, once it arrived. */
  readonly headers: Promise<Headers>;
  close(): Promise<void>;
}

/** Opens `url` and collects its frames until `close()`. */
export function readSse(url: string, headers: Record<string, string> = {}): SseReader {
  const frames: Array<{ event: string; data: any }> = [];
  const controller = new AbortController();
  let gotHeaders!: (headers: Headers) => void;
  const headersPromise = new Promise<Headers>((resolve) => (gotHeaders = resolve));
  const done = (async () => {
    const response = await fetch(url, { headers, signal: controller.signal });
    gotHeaders(response.headers);
    const decoder = new TextDecoder();
    let buffer = "";
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(chunk, { stream: true });
      let end: number;
      while ((end = buffer.indexOf("\n\n")) !== -1) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = /^event: (.*)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (event !== undefined && data !== undefined) frames.push({ event, data: JSON.parse(data) });
      }
    }
  })().catch((error: unknown) => {
    if (!controller.signal.aborted) throw error;
  });
  return {
    frames,
    headers: headersPromise,
    close: async () => {
      controller.abort();
      await done;
    },
  };
}
