import type { Command } from 'commander';

/** Adds one subcommand to the program. */
export type RegisterCommand = (program: Command) => void;

/** Every command, in the order `--help` lists them. */
export const commands: RegisterCommand[] = [];
