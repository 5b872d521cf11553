/**
 * What the CJS build of `@blacktree/orchestrator/testing` gets in place of vitest (see
 * tsup.config.ts): vitest cannot be `require()`d, so the contract suites, and only they, explain
 * that they must be loaded from an ES module (vitest test files are).
 * @internal
 */
function unavailable(): never {
  throw new Error(
    "The @blacktree/orchestrator/testing contract suites need vitest, which cannot be require()d: load them with import from an ES module (vitest test files are)",
  );
}

export {
  unavailable as describe,
  unavailable as it,
  unavailable as expect,
  unavailable as beforeAll,
  unavailable as afterAll,
  unavailable as beforeEach,
  unavailable as afterEach,
};
