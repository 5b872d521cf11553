/** The stylesheet `main.ts` imports: esbuild emits it as console.css beside the script. */
declare module "*.css";
