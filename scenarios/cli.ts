/**
 * `npm run simulate -- scenarios/delivery/late-order.yaml [more.yaml …]`: plays each scenario
 * against the real engine and model, prints the transcript and the checks, and exits non-zero
 * when a scenario fails.
 */
import { Command } from 'commander';
import { Engine } from '../engine/engine.ts';
import { isEngineError } from '../engine/errors.ts';
import { engineLoadFailure, engineOptions, loadConfig } from '../runtime/config.ts';
import { log } from '../runtime/log.ts';
import { loadScenario, ScenarioError } from './scenario.ts';
import { simulate, type SimulationReport } from './simulator.ts';

const speakers: Record<string, Record<'in' | 'out', string>> = {
  customer: { in: '顾客', out: '客服 → 顾客' },
  rider: { in: '骑手', out: '客服 → 骑手' },
};

function printReport(report: SimulationReport): void {
  console.log(`\n=== ${report.scenario} ===`);
  for (const entry of report.transcript) {
    console.log(`${(speakers[entry.party]?.[entry.direction] ?? entry.party).padEnd(8)} ${entry.text}`);
  }
  console.log('');
  for (const check of report.checks) {
    console.log(`${check.passed ? 'PASS' : 'FAIL'}  ${check.name}: expected ${check.expected}, got ${check.actual}`);
  }
  console.log(`${report.passed ? 'PASSED' : 'FAILED'} in ${(report.durationMs / 1000).toFixed(1)} s`);
}

const program = new Command()
  .name('simulate')
  .argument('<files...>', 'scenario YAML files')
  .option('--model-dir <dir>', 'model folder (default: the configured model)')
  .option('--json', 'print the reports as JSON instead of text')
  .parse();

const options = program.opts<{ modelDir?: string; json?: boolean }>();
// The transcript is the output here; per-turn logs are shown only when asked for.
log.level = process.env.SANFANG_LOG_LEVEL ?? 'warn';
let config: ReturnType<typeof loadConfig>;
try {
  config = loadConfig();
} catch (error) {
  console.error((error as Error).message);
  process.exit(2);
}

let scenarios;
try {
  scenarios = program.args.map((file) => ({ file, scenario: loadScenario(file) }));
} catch (error) {
  if (error instanceof ScenarioError) {
    console.error(`error [${error.code}]: ${error.message}`);
    process.exit(2);
  }
  throw error;
}

let engine: Engine;
try {
  engine = await Engine.load({ ...engineOptions(config), modelDir: options.modelDir ?? config.modelDir });
} catch (error) {
  if (!isEngineError(error)) throw error;
  console.error(`error [${error.code}]: ${engineLoadFailure(error)}`);
  process.exit(1);
}
const reports: SimulationReport[] = [];
for (const { scenario } of scenarios) reports.push(await simulate(scenario, { engine }));
await engine.close();

if (options.json) console.log(JSON.stringify(reports, null, 2));
else reports.forEach(printReport);
process.exit(reports.every((r) => r.passed) ? 0 : 1);
