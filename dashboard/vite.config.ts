import { defineConfig } from "vite";

// Built into dist/, which build.rs embeds in the binary; served at /dashboard/.
export default defineConfig({
  base: "/dashboard/",
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    // One small bundle; no source maps in the binary.
    sourcemap: false,
    chunkSizeWarningLimit: 400,
  },
});
