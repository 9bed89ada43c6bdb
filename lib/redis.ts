/** How every Switchyard process reaches Redis: URL, ACL user, password and TLS, as config. */
import { readFileSync } from 'node:fs';
import Type, { type Static } from 'typebox';
import { isLoopbackUrl } from './secure.ts';

export const RedisConnectionSchema = Type.Object({
  redisUrl: Type.String({
    minLength: 1,
    default: 'redis://127.0.0.1:6379',
    description: 'Redis URL (rediss:// for TLS); put the user and password in their own settings',
  }),
  redisUsername: Type.String({ default: '', description: 'Redis ACL user (empty: the default user)' }),
  redisPassword: Type.String({ default: '', secret: true, description: "Redis ACL user's password" }),
  redisCa: Type.String({
    default: '',
    description: "CA file that signed Redis's certificate (with rediss://)",
  }),
});
export type RedisConnection = Static<typeof RedisConnectionSchema>;

/** The connection settings a client needs: the URL, the rest optional. */
export type RedisSettings = Pick<RedisConnection, 'redisUrl'> & Partial<RedisConnection>;

/** node-redis client options for `settings` (URL, credentials, TLS). */
export function redisClientOptions(settings: RedisSettings): {
  url: string;
  username?: string;
  password?: string;
  socket?: { tls: true; ca: Buffer };
} {
  const tls = settings.redisUrl.startsWith('rediss://');
  return {
    url: settings.redisUrl,
    ...(settings.redisUsername ? { username: settings.redisUsername } : {}),
    ...(settings.redisPassword ? { password: settings.redisPassword } : {}),
    ...(tls && settings.redisCa ? { socket: { tls: true, ca: readFileSync(settings.redisCa) } } : {}),
  };
}

/** Why `settings` are not secure: no password, or plain text to another machine. */
export function redisInsecurities(settings: RedisSettings): string[] {
  const out: string[] = [];
  if (!settings.redisPassword && !/\/\/[^/]*:[^/]*@/.test(settings.redisUrl))
    out.push('Redis: no password (set SWITCHYARD_REDIS_USERNAME and SWITCHYARD_REDIS_PASSWORD)');
  if (!settings.redisUrl.startsWith('rediss://') && !isLoopbackUrl(settings.redisUrl))
    out.push(`Redis: ${redactUrl(settings.redisUrl)} is plain text to another machine (use rediss://)`);
  return out;
}

/** `url` without any password in it, for logs and errors. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/([^/@:]*):[^/@]*@/, '//$1:***@');
}
