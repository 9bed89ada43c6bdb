import type { Command } from 'commander';
import { registerArchive } from './archive.ts';
import { registerEdge } from './edge.ts';
import { registerMonitor } from './monitor.ts';
import { registerIngest } from './ingest.ts';
import { registerSimulate } from './simulate.ts';
import { registerSite } from './site.ts';
import { registerStack } from './stack.ts';

/** Adds one subcommand to the program. */
export type RegisterCommand = (program: Command) => void;

/** Every command, in the order `--help` lists them. */
export const commands: RegisterCommand[] = [
  registerEdge,
  registerSite,
  registerStack,
  registerSimulate,
  registerArchive,
  registerMonitor,
  registerIngest,
];
