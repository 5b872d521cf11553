import { createSocket } from "node:dgram";
import type { Socket } from "node:dgram";

/** The records a {@link DnsResponder} answers with, by name (lower case, no trailing dot). */
export interface DnsZone {
  a?: Record<string, string[]>;
  aaaa?: Record<string, string[]>;
  srv?: Record<string, Array<{ target: string; port: number; priority?: number; weight?: number }>>;
}

/** A DNS server on loopback UDP answering A, AAAA and SRV questions from a zone the test changes at will. */
export interface DnsResponder {
  /** `127.0.0.1:<port>`, for `DnsWorkers({ servers })`. */
  readonly server: string;
  /** Questions answered so far. */
  readonly queries: number;
  /** Replaces the zone; the next question is answered from it. */
  setZone(zone: DnsZone): void;
  close(): Promise<void>;
}

const TYPE = { A: 1, AAAA: 28, SRV: 33 } as const;

/**
 * Starts a minimal authoritative DNS responder (RFC 1035 framing, one question per query, no
 * compression beyond pointing answers at the question) on 127.0.0.1 and an ephemeral port. A name
 * absent from every record set gets NXDOMAIN; a known name without records of the asked type gets
 * an empty NOERROR answer.
 */
export async function startDnsResponder(zone: DnsZone = {}): Promise<DnsResponder> {
  let current = zone;
  let queries = 0;
  const socket: Socket = createSocket("udp4");
  socket.on("message", (message, remote) => {
    const reply = answer(message, current);
    if (!reply) return;
    queries += 1;
    socket.send(reply, remote.port, remote.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
  return {
    server: `127.0.0.1:${socket.address().port}`,
    get queries() {
      return queries;
    },
    setZone(next) {
      current = next;
    },
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}

function answer(message: Buffer, zone: DnsZone): Buffer | undefined {
  if (message.length < 12) return undefined;
  const id = message.readUInt16BE(0);
  const labels: string[] = [];
  let offset = 12;
  while (offset < message.length && message[offset] !== 0) {
    const length = message[offset] as number;
    labels.push(message.subarray(offset + 1, offset + 1 + length).toString("ascii"));
    offset += 1 + length;
  }
  offset += 1;
  const qtype = message.readUInt16BE(offset);
  const question = message.subarray(12, offset + 4);
  const name = labels.join(".").toLowerCase();
  const known = [zone.a, zone.aaaa, zone.srv].some((set) => set !== undefined && Object.hasOwn(set, name));
  const records: Buffer[] = [];
  if (qtype === TYPE.A) for (const ip of zone.a?.[name] ?? []) records.push(rr(TYPE.A, Buffer.from(ip.split(".").map(Number))));
  if (qtype === TYPE.AAAA) for (const ip of zone.aaaa?.[name] ?? []) records.push(rr(TYPE.AAAA, ipv6(ip)));
  if (qtype === TYPE.SRV) {
    for (const srv of zone.srv?.[name] ?? []) {
      const head = Buffer.alloc(6);
      head.writeUInt16BE(srv.priority ?? 10, 0);
      head.writeUInt16BE(srv.weight ?? 10, 2);
      head.writeUInt16BE(srv.port, 4);
      records.push(rr(TYPE.SRV, Buffer.concat([head, encodeName(srv.target)])));
    }
  }
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  // QR, AA, RD, RA; rcode 3 (NXDOMAIN) for an unknown name.
  header.writeUInt16BE(0x8580 | (known ? 0 : 3), 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(records.length, 6);
  return Buffer.concat([header, question, ...records]);
}

/** A resource record whose name points at the question (offset 12). */
function rr(type: number, data: Buffer): Buffer {
  const head = Buffer.alloc(12);
  head.writeUInt16BE(0xc00c, 0);
  head.writeUInt16BE(type, 2);
  head.writeUInt16BE(1, 4);
  head.writeUInt32BE(1, 6);
  head.writeUInt16BE(data.length, 10);
  return Buffer.concat([head, data]);
}

function encodeName(name: string): Buffer {
  const parts = name.replace(/\.$/, "").split(".").map((label) => Buffer.concat([Buffer.from([label.length]), Buffer.from(label, "ascii")]));
  return Buffer.concat([...parts, Buffer.from([0])]);
}

function ipv6(ip: string): Buffer {
  const [head = "", tail = ""] = ip.split("::");
  const left = head === "" ? [] : head.split(":");
  const right = tail === "" ? [] : tail.split(":");
  const groups = ip.includes("::") ? [...left, ...Array(8 - left.length - right.length).fill("0"), ...right] : left;
  const bytes = Buffer.alloc(16);
  groups.forEach((group, i) => bytes.writeUInt16BE(Number.parseInt(group, 16), i * 2));
  return bytes;
}
