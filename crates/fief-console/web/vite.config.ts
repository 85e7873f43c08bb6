import { resolve } from "node:path";
import { defineConfig } from "vite";

// Two pages, one per listener: the operator console (admin listener) and the
// tenant console (data listener), both served under /console/ from assets
// embedded in the fief binary (crates/fief-console/dist, committed).
export default defineConfig({
  base: "/console/",
  build: {
    outDir: "../dist",
    emptyOutDir: true,
    // No source maps or inlined data URLs: every byte served is a file here.
    sourcemap: false,
    assetsInlineLimit: 0,
    rollupOptions: {
      input: {
        operator: resolve(import.meta.dirname, "operator.html"),
        tenant: resolve(import.meta.dirname, "tenant.html"),
      },
    },
  },
});
