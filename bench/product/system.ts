/**
 * Starts the product as separate processes: worker processes (`serveWorker`), one orchestrator
 * (`Dispatcher` over AMQP and gRPC) and one producer (`JobClient`), on a fresh topology, and takes
 * all of it down again (processes and broker objects) whatever happened.
 */
import { profileFlags, startChild, startChildren, stopAll, type ChildHandle } from "../lib/proc.ts";
import { deleteTopology, freshQueueName } from "../lib/rabbit.ts";
import { WorkerEvents } from "./worker-events.ts";

/** A running product deployment. */
export interface ProductSystem {
  queue: string;
  workers: ChildHandle[];
  orchestrator: ChildHandle;
  producer: ChildHandle;
  /** The `hold` handler's start and abort events from every worker, added ones too. */
  events: WorkerEvents;
  /** Starts one more worker process and adds it to the orchestrator's pool. */
  addWorker(id: string): Promise<ChildHandle>;
  /** Stops every process and deletes the topology. Never rejects. */
  close(): Promise<void>;
}

/** Starts workers × slots, the orchestrator and the producer; the dispatcher is running when it resolves. */
export async function startProductSystem(options: { workers: number; slotsPerWorker: number }): Promise<ProductSystem> {
  const queue = freshQueueName("product");
  const children: ChildHandle[] = [];
  const close = async (): Promise<void> => {
    await stopAll(children);
    await deleteTopology(queue, { known: [queue] });
  };
  const workerSpec = (name: string) => ({
    script: new URL("./worker.ts", import.meta.url),
    options: { name, args: ["--slots", String(options.slotsPerWorker)], execArgv: profileFlags(name) },
  });
  try {
    const workers = await startChildren(Array.from({ length: options.workers }, (_, i) => workerSpec(`product-worker-${i}`)));
    children.push(...workers);
    const events = new WorkerEvents();
    workers.forEach((w) => events.follow(w));
    const addresses = workers.map((w) => w.ready.address as string).join(",");
    const [orchestrator, producer] = await startChildren([
      {
        script: new URL("./orchestrator.ts", import.meta.url),
        options: {
          name: "product-orchestrator",
          args: ["--queue", queue, "--workers", addresses, "--slots", String(options.slotsPerWorker)],
          execArgv: profileFlags("product-orchestrator"),
        },
      },
      {
        script: new URL("./producer.ts", import.meta.url),
        options: { name: "product-producer", args: ["--queue", queue], execArgv: profileFlags("product-producer") },
      },
    ]);
    children.push(orchestrator!, producer!);
    await orchestrator!.request("start", {}, 30_000);
    return {
      queue,
      workers,
      orchestrator: orchestrator!,
      producer: producer!,
      events,
      addWorker: async (id) => {
        const spec = workerSpec(`product-worker-${id}`);
        const worker = await startChild(spec.script, spec.options);
        children.push(worker);
        workers.push(worker);
        events.follow(worker);
        await orchestrator!.request("addWorker", { id, address: worker.ready.address });
        return worker;
      },
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

/** Runs `fn` on a fresh product deployment and takes it down after, whatever happens. */
export async function withProductSystem<T>(options: { workers: number; slotsPerWorker: number }, fn: (system: ProductSystem) => Promise<T>): Promise<T> {
  const system = await startProductSystem(options);
  try {
    return await fn(system);
  } finally {
    await system.close();
  }
}
