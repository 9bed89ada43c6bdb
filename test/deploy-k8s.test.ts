/**
 * What deploy/k8s promises, checked against the code it deploys: every variable a container sets is
 * one its command reads and parses through the command's own config loader, probes and scrapes hit
 * the ops port the command binds, and the pods are locked down.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import type { TObject } from 'typebox';
import { Registry } from 'prom-client';
import { HubStreamConfigSchema } from '../cloud/hub-stream.ts';
import { runnerMetrics } from '../cloud/runner-metrics.ts';
import { HUB_DOMAIN } from '../schemas/streams.ts';
import { loadConfig } from '../lib/config.ts';
import { ENV_PREFIX } from '../lib/env.ts';
import {
  ALL_VARS,
  CONSUMERS,
  defaultOf,
  K8S,
  keyOfEnv,
  parseYamlFile,
  parseYamlValues,
  resolveCommand,
  SCHEMAS,
} from './support/deploy.ts';

// ---------------------------------------------------------------------------------------------
// Kubernetes

describe('Kubernetes manifests', () => {
  const kustomization = parseYamlFile(join(K8S, 'kustomization.yaml'))[0] as unknown as {
    namespace: string;
    resources: string[];
    images: { name: string; newName: string; newTag: string }[];
  };
  const resources = kustomization.resources.flatMap((file) => parseYamlFile(join(K8S, file)));
  const configMap = resources.find((r) => r.kind === 'ConfigMap')!;
  const secretFile = parseYamlFile(join(K8S, 'secret.example.yaml'));
  const secret = secretFile[0]!;
  const jobs = parseYamlFile(join(K8S, 'site-add-job.yaml'));
  const deployments = resources.filter((r) => r.kind === 'Deployment');
  const image = kustomization.images[0]!;

  /** The environment a container gets: its ConfigMaps, env values and (example) Secret values. */
  function containerEnv(container: {
    envFrom?: { configMapRef?: { name: string }; secretRef?: { name: string } }[];
    env?: { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }[];
  }): { env: Record<string, string>; fromConfigMap: string[]; own: string[] } {
    const env: Record<string, string> = {};
    const fromConfigMap: string[] = [];
    for (const from of container.envFrom ?? []) {
      assert.equal(
        from.secretRef,
        undefined,
        'take Secret keys one by one (secretKeyRef), only those the command reads',
      );
      assert.equal(from.configMapRef?.name, configMap.metadata.name);
      Object.assign(env, configMap.data);
      fromConfigMap.push(...Object.keys(configMap.data ?? {}));
    }
    for (const e of container.env ?? []) {
      const ref = e.valueFrom?.secretKeyRef;
      if (ref) {
        assert.equal(ref.name, secret.metadata.name);
        assert.ok(ref.key in (secret.stringData ?? {}), `${ref.key} is not in secret.example.yaml`);
        assert.equal(e.name, ref.key, 'a Secret key is named after the variable it becomes');
        env[e.name] = secret.stringData![ref.key]!;
      } else env[e.name] = e.value ?? '';
    }
    return { env, fromConfigMap, own: (container.env ?? []).map((e) => e.name) };
  }

  test('every resource parses; the secret template and the per-site Job are not applied by kustomize', () => {
    assert.deepEqual(resources.map((r) => r.kind).sort(), [
      'ConfigMap',
      'Deployment',
      'Deployment',
      'Deployment',
      'Deployment',
      'Namespace',
      'NetworkPolicy',
      'NetworkPolicy',
      'NetworkPolicy',
      'NetworkPolicy',
      'PodDisruptionBudget',
      'PodDisruptionBudget',
      'Service',
      'Service',
      'Service',
      'Service',
      'ServiceAccount',
    ]);
    assert.ok(!kustomization.resources.includes('secret.example.yaml'));
    assert.equal(resources.find((r) => r.kind === 'Namespace')!.metadata.name, kustomization.namespace);
    assert.equal(secret.kind, 'Secret');
    assert.equal(secret.metadata.namespace, kustomization.namespace);
    assert.deepEqual(
      jobs.map((j) => j.kind),
      ['Job'],
    );
  });

  test('one Deployment per consumer, each running a real command through the image entrypoint', async () => {
    const run: string[] = [];
    for (const d of deployments) {
      const [container, ...others] = d.spec.template.spec.containers;
      assert.equal(others.length, 0);
      assert.equal(container.command, undefined, 'args go to the image ENTRYPOINT (node dist/cli/main.js)');
      assert.equal(container.image, image.name);
      run.push(await resolveCommand(container.args));
    }
    assert.deepEqual(run.sort(), [...CONSUMERS, 'console'].sort());
  });

  test('each container sets only variables its command reads, with values its config loader accepts', async () => {
    for (const d of deployments) {
      const container = d.spec.template.spec.containers[0];
      const command = await resolveCommand(container.args);
      const schema = SCHEMAS[command]!;
      const { env, own } = containerEnv(container);
      for (const name of own.filter((n) => n.startsWith(ENV_PREFIX)))
        assert.ok(keyOfEnv(schema, name), `${d.metadata.name}: ${command} does not read ${name}`);
      assert.doesNotThrow(() => loadConfig(schema, { env }), `${d.metadata.name}: config`);
    }
  });

  test('the ConfigMap holds only settings that some command taking it reads, meaning the same in each', async () => {
    const readers = [
      ...deployments.map((d) => d.spec.template.spec.containers[0]),
      ...jobs.map((j) => j.spec.template.spec.containers[0]),
    ];
    const schemas: TObject[] = [];
    for (const c of readers)
      if (containerEnv(c).fromConfigMap.length > 0) schemas.push(SCHEMAS[await resolveCommand(c.args)]!);
    for (const name of Object.keys(configMap.data ?? {})) {
      const readBy = schemas.filter((s) => keyOfEnv(s, name));
      assert.ok(readBy.length > 0, `no command that takes the ConfigMap reads ${name}`);
      // A setting whose default differs between commands (ops port, batch size …) is per command.
      const defaults = new Set(readBy.map((s) => defaultOf(s, keyOfEnv(s, name)!)));
      assert.equal(
        defaults.size,
        1,
        `${name} means different things to different commands: set it per Deployment`,
      );
    }
  });

  test('every key of the Secret template is a setting a command reads', () => {
    for (const key of Object.keys(secret.stringData ?? {})) assert.ok(ALL_VARS.has(key), key);
  });

  test('probes and the scrape hit /healthz, /readyz and /metrics on the ops port the command binds', async () => {
    for (const d of deployments) {
      const pod = d.spec.template;
      const container = pod.spec.containers[0];
      const schema = SCHEMAS[await resolveCommand(container.args)]!;
      const config = loadConfig(schema, { env: containerEnv(container).env }) as {
        opsPort: number;
        opsHost: string;
      };
      assert.equal(config.opsHost, '0.0.0.0', `${d.metadata.name}: ops endpoint must listen on the pod IP`);
      const ops = container.ports.find((p: { name: string }) => p.name === 'ops');
      assert.equal(ops?.containerPort, config.opsPort, `${d.metadata.name}: containerPort`);
      for (const [probe, path] of [
        ['livenessProbe', '/healthz'],
        ['readinessProbe', '/readyz'],
      ] as const) {
        assert.equal(container[probe]?.httpGet?.path, path, `${d.metadata.name}: ${probe}`);
        assert.ok(
          [ops.name, ops.containerPort].includes(container[probe].httpGet.port),
          `${d.metadata.name}: ${probe} port`,
        );
      }
      assert.equal(pod.metadata.annotations['prometheus.io/scrape'], 'true');
      assert.equal(pod.metadata.annotations['prometheus.io/port'], String(config.opsPort));
      assert.equal(pod.metadata.annotations['prometheus.io/path'], '/metrics');

      const service = resources.find((r) => r.kind === 'Service' && r.metadata.name === d.metadata.name);
      assert.ok(service, `${d.metadata.name}: a Service for its metrics`);
      for (const [k, v] of Object.entries(service.spec.selector as Record<string, string>))
        assert.equal(pod.metadata.labels[k], v, `${d.metadata.name}: Service selector`);
      assert.ok([ops.name, ops.containerPort].includes(service.spec.ports[0].targetPort));
    }
  });

  test('pods get longer to stop than the runner takes to settle the batch in hand', async () => {
    for (const d of deployments) {
      const container = d.spec.template.spec.containers[0];
      const schema = SCHEMAS[await resolveCommand(container.args)]!;
      // The console has no batch to settle: 0.
      const { shutdownGraceMs = 0 } = loadConfig(schema, { env: containerEnv(container).env }) as {
        shutdownGraceMs?: number;
      };
      // The write in hand gets shutdownGraceMs; naks, closing the sink and the NATS drain follow.
      assert.ok(
        d.spec.template.spec.terminationGracePeriodSeconds >= shutdownGraceMs / 1000 + 10,
        d.metadata.name,
      );
    }
  });

  test('pods run as non-root on a read-only root, with no capabilities, and with resources set', () => {
    for (const pod of [...deployments, ...jobs].map((r) => r.spec.template.spec)) {
      assert.equal(pod.securityContext.runAsNonRoot, true);
      assert.ok(pod.securityContext.runAsUser > 0);
      const c = pod.containers[0];
      assert.equal(c.securityContext.readOnlyRootFilesystem, true);
      assert.equal(c.securityContext.allowPrivilegeEscalation, false);
      assert.deepEqual(c.securityContext.capabilities.drop, ['ALL']);
      for (const kind of ['requests', 'limits'])
        assert.ok(c.resources[kind].memory && c.resources[kind].cpu, kind);
    }
  });

  test('one archive worker; PodDisruptionBudgets select their consumer', () => {
    const archive = deployments.find((d) => d.spec.template.spec.containers[0].args[0] === 'archive')!;
    assert.equal(archive.spec.replicas, 1);
    for (const pdb of resources.filter((r) => r.kind === 'PodDisruptionBudget')) {
      const target = deployments.find((d) => d.metadata.name === pdb.metadata.name);
      assert.ok(target, `${pdb.metadata.name}: no Deployment of that name`);
      assert.ok(pdb.spec.minAvailable < target.spec.replicas, `${pdb.metadata.name} would block every drain`);
      assert.deepEqual(pdb.spec.selector.matchLabels, target.spec.selector.matchLabels);
    }
  });

  const matches = (selector: Record<string, string>, labels: Record<string, string>): boolean =>
    Object.entries(selector).every(([k, v]) => labels[k] === v);
  const pods = [...deployments, ...jobs].map((r) => r.spec.template);

  test('the namespace enforces the restricted Pod Security profile, and every pod meets it', () => {
    const labels = resources.find((r) => r.kind === 'Namespace')!.metadata.labels!;
    assert.equal(labels['pod-security.kubernetes.io/enforce'], 'restricted');
    for (const { spec } of pods) {
      assert.equal(spec.securityContext.seccompProfile.type, 'RuntimeDefault');
      for (const c of spec.containers) {
        assert.equal(c.securityContext.allowPrivilegeEscalation, false);
        assert.deepEqual(c.securityContext.capabilities.drop, ['ALL']);
        assert.equal(c.securityContext.capabilities.add, undefined);
        assert.equal(c.securityContext.privileged, undefined);
      }
      for (const v of spec.volumes ?? []) assert.equal(v.hostPath, undefined, 'no hostPath');
    }
  });

  test('every pod mounts the NATS credentials and CA where SWITCHYARD_NATS_CREDS and _CA point', () => {
    const creds = configMap.data!.SWITCHYARD_NATS_CREDS!;
    const ca = configMap.data!.SWITCHYARD_NATS_CA!;
    for (const { spec } of pods) {
      const volume = spec.volumes.find((v: { secret?: { secretName: string } }) => v.secret);
      assert.equal(volume.secret.secretName, 'switchyard-nats-client');
      const mount = spec.containers[0].volumeMounts.find((m: { name: string }) => m.name === volume.name);
      assert.equal(mount.readOnly, true);
      for (const file of [creds, ca]) assert.equal(dirname(file), mount.mountPath, file);
    }
    assert.doesNotMatch(JSON.stringify(secret.stringData), /creds|BEGIN/i, 'no NATS secret inline');
  });

  test('the Redis password comes from the Secret to every command that reads Redis', () => {
    for (const d of deployments) {
      const c = d.spec.template.spec.containers[0];
      const schema = SCHEMAS[c.args[0] as string]!;
      const reads = 'redisPassword' in schema.properties;
      const ref = c.env.find((e: { name: string }) => e.name === 'SWITCHYARD_REDIS_PASSWORD');
      assert.equal(Boolean(ref), reads, `${d.metadata.name}`);
      if (ref) assert.equal(ref.valueFrom.secretKeyRef.name, secret.metadata.name);
    }
  });

  test('the archive reaches S3 through its ServiceAccount, the S3 keys optional', () => {
    const archive = deployments.find((d) => d.spec.template.spec.containers[0].args[0] === 'archive')!;
    const account = resources.find((r) => r.kind === 'ServiceAccount')!;
    assert.equal(archive.spec.template.spec.serviceAccountName, account.metadata.name);
    assert.match(
      (account.metadata as { annotations: Record<string, string> }).annotations[
        'eks.amazonaws.com/role-arn'
      ]!,
      /^arn:aws:iam::\d+:role\//,
    );
    for (const e of archive.spec.template.spec.containers[0].env)
      if (e.name.startsWith('SWITCHYARD_S3_') && e.valueFrom)
        assert.equal(e.valueFrom.secretKeyRef.optional, true);
  });

  test('network policies: default deny; each consumer may reach only NATS, Redis, the engines, HTTPS, DNS', () => {
    const policies = resources.filter((r) => r.kind === 'NetworkPolicy');
    const deny = policies.find((p) => Object.keys(p.spec.podSelector).length === 0)!;
    assert.deepEqual(deny.spec.policyTypes.sort(), ['Egress', 'Ingress']);
    assert.equal(deny.spec.ingress, undefined);
    assert.equal(deny.spec.egress, undefined);
    const allowedPorts = new Set([4222, 6379, 8086, 443, 53]);
    for (const d of deployments) {
      const labels = d.spec.template.metadata.labels;
      const selecting = policies.filter(
        (p) => p.spec.podSelector.matchLabels && matches(p.spec.podSelector.matchLabels, labels),
      );
      assert.ok(
        selecting.some((p) => p.spec.egress),
        `${d.metadata.name}: no egress policy selects it`,
      );
      for (const p of selecting) {
        for (const rule of p.spec.egress ?? [])
          for (const port of rule.ports)
            assert.ok(allowedPorts.has(port.port), `${p.metadata.name}: egress ${port.port}`);
        for (const rule of p.spec.ingress ?? []) {
          const portNames = d.spec.template.spec.containers[0].ports.map((cp: { name: string }) => cp.name);
          for (const port of rule.ports)
            assert.ok(portNames.includes(port.port), `${p.metadata.name}: ${port.port}`);
          if (rule.ports.some((port: { port: string }) => port.port === 'ops'))
            assert.deepEqual(rule.from, [
              { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } },
            ]);
        }
      }
    }
  });

  test('consumers with replicas spread over zones and machines, each constraint selecting its own pods', () => {
    for (const d of deployments.filter((x) => x.spec.replicas > 1)) {
      const constraints = d.spec.template.spec.topologySpreadConstraints;
      assert.ok(constraints?.length, `${d.metadata.name}: no topologySpreadConstraints`);
      assert.deepEqual(constraints.map((c: { topologyKey: string }) => c.topologyKey).sort(), [
        'kubernetes.io/hostname',
        'topology.kubernetes.io/zone',
      ]);
      for (const c of constraints) assert.deepEqual(c.labelSelector.matchLabels, d.spec.selector.matchLabels);
    }
  });

  test('the site-add Job runs `site add` with the image kustomize deploys and the shared settings', async () => {
    const container = jobs[0]!.spec.template.spec.containers[0];
    assert.equal(await resolveCommand(container.args), 'site add');
    assert.equal(container.args.length, 3, 'site add <site>');
    assert.equal(container.image, `${image.newName}:${image.newTag}`);
    assert.doesNotThrow(() => loadConfig(HubStreamConfigSchema, { env: containerEnv(container).env }));
  });
});

describe('deploy/k8s/alerts.yaml', () => {
  const [rule] = parseYamlFile(join(K8S, 'alerts.yaml')) as unknown as {
    kind: string;
    spec: { groups: { rules: { alert: string; expr: string; annotations: { summary: string } }[] }[] };
  }[];
  const rules = rule!.spec.groups.flatMap((g) => g.rules);

  test('is a PrometheusRule that kustomize leaves out (its CRD may be missing)', () => {
    assert.equal(rule!.kind, 'PrometheusRule');
    const kustomization = parseYamlFile(join(K8S, 'kustomization.yaml'))[0] as unknown as {
      resources: string[];
    };
    assert.ok(!kustomization.resources.includes('alerts.yaml'));
    assert.ok(rules.length >= 5);
  });

  test('every alert reads metrics the consumers export, by labels they carry', () => {
    const registry = new Registry();
    runnerMetrics(registry);
    // prom-client keeps each metric's label names on the metric itself.
    const exported = new Map(
      registry
        .getMetricsAsArray()
        .map((m) => [m.name, new Set((m as unknown as { labelNames: string[] }).labelNames)]),
    );
    for (const { alert, expr, annotations } of rules) {
      const names = expr.match(/switchyard_[a-z_]+/g) ?? [];
      assert.ok(names.length > 0, `${alert} reads no Switchyard metric`);
      for (const name of names) {
        assert.ok(exported.has(name), `${alert}: ${name} is not exported`);
        for (const [, by] of expr.matchAll(/by \(([^)]*)\)/g))
          for (const label of by!.split(',').map((l) => l.trim()))
            assert.ok(exported.get(name)!.has(label), `${alert}: ${name} has no label ${label}`);
      }
      assert.ok(annotations.summary.length > 0);
    }
  });
});

describe('the hub on the official NATS Helm chart (deploy/k8s/nats/values.yaml)', () => {
  const values = parseYamlValues(join(K8S, 'nats', 'values.yaml'));
  const config = values.config;

  test('a 3-node JetStream cluster on file storage with a PVC, in the domain the code uses', () => {
    assert.equal(config.cluster.enabled, true);
    assert.equal(config.cluster.replicas, 3);
    assert.equal(config.jetstream.enabled, true);
    assert.equal(config.jetstream.fileStore.enabled, true);
    assert.equal(config.jetstream.fileStore.pvc.enabled, true);
    assert.match(config.jetstream.fileStore.pvc.size, /^\d+[GT]i$/);
    assert.equal(config.jetstream.merge.domain, HUB_DOMAIN);
    const [major, minor] = String(values.container.image.tag).split(/[.-]/).map(Number);
    assert.ok(major! > 2 || (major === 2 && minor! >= 9), 'nats-server 2.9 or newer');
  });

  test('TLS on the client, route and leaf ports; leaves must show a certificate of the CA', () => {
    for (const listener of [config.nats, config.cluster, config.leafnodes]) {
      assert.equal(listener.tls.enabled, true);
      assert.ok(listener.tls.secretName);
    }
    assert.equal(config.leafnodes.enabled, true);
    assert.equal(config.leafnodes.tls.merge.verify, true);
    assert.ok(config.leafnodes.tls.merge.ca_file);
  });

  test('operator mode with a full resolver on the persistent volume, preloading the system account', () => {
    const merge = config.merge;
    assert.ok(merge.operator);
    assert.equal(merge.resolver.type, 'full');
    assert.equal(merge.resolver.allow_delete, true);
    assert.ok(merge.resolver.interval);
    assert.ok(
      String(merge.resolver.dir).startsWith(`${config.jetstream.fileStore.dir}/`),
      'the resolver keeps its JWTs on the JetStream PVC',
    );
    assert.ok(merge.system_account in merge.resolver_preload, 'the system account is preloaded');
    assert.equal(Object.keys(merge.resolver_preload).length, 2, 'the system and hub accounts');
  });

  test('the consumers reach the hub through the Service the chart names', () => {
    const configMap = parseYamlFile(join(K8S, 'configmap.yaml'))[0]!;
    const url = new URL(configMap.data!.SWITCHYARD_NATS_URL!);
    assert.equal(url.hostname.split('.')[0], values.fullnameOverride);
    assert.equal(Number(url.port), config.nats.port);
    assert.equal(configMap.data!.SWITCHYARD_HUB_REPLICAS, String(config.cluster.replicas));
  });
});
