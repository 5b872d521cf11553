// The proxy is part of the public test kit now (`@blacktree/orchestrator/testing`).
export { TcpProxy } from "../../src/testing/tcp-proxy.ts";
