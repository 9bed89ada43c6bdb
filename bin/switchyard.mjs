#!/usr/bin/env node
// The `switchyard` command. Runs the TypeScript sources through tsx's loader so that a clone works
// without a build step; `npm run build` type-checks and emits the same modules to dist/.
import { register } from 'tsx/esm/api';

register();
await import('../cli/main.ts');
