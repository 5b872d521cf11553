/**
 * The worker protocol this package speaks, as workers announce it in their description. An
 * orchestrator refuses a worker that announces another one (an empty announcement, from a worker
 * older than the field, reads as this one).
 */
export const WORKER_PROTOCOL = "blacktree.orchestrator.v1";
