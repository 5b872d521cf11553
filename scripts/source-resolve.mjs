// The resolve hook registered by source-imports.mjs: package specifiers to source files.
let entries = {};
export function initialize(data) {
  entries = data;
}
export function resolve(specifier, context, next) {
  const target = entries[specifier];
  return target === undefined ? next(specifier, context) : next(target, context);
}
