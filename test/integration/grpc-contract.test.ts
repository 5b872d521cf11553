import { GrpcTransport } from "../../src/transport/grpc/index.ts";
import { describeTransportContract } from "../../src/testing/contracts/transport-contract.ts";
import { startWorkerProcess } from "../helpers/worker-process.ts";

// The same suite InProcessTransport passes, here over the real wire to real worker processes.
describeTransportContract("GrpcTransport to a worker process", async ({ slots, labels }) => {
  const worker = await startWorkerProcess({ slots, labels });
  const transport = new GrpcTransport({ address: worker.address });
  return {
    transport,
    dispose: async () => {
      await transport.close();
      await worker.stop();
    },
  };
});
