export { OrchestratorError } from "../../errors.ts";
