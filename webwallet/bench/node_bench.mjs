// The same timing as in the browser, in Node (bench/bench_webwallet.py): the core imported as
// is, the configuration as JSON in argv[2], the results as one JSON line on stdout.
import { runBench } from './core_bench_entry.js';

const results = await runBench(JSON.parse(process.argv[2]));
results.runtime = `node ${process.version}`;
process.stdout.write(`${JSON.stringify(results)}\n`);
