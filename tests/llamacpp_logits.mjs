// Loads a GGUF with llama.cpp (the CPU build of the npm package node-llama-cpp, found under
// $NODE_LLAMA_CPP/node_modules), evaluates the token ids given after the path in one batch
// and prints {"file_type": general.file_type as llama.cpp reads it, "logits": [[[id, logit],
// ...] per token]} as JSON. The KV cache is F32 and flash attention off, so that attention runs in
// float32 like the weights' products. With $ACEM_LLAMACPP_TEXT set, also "tokens": llama.cpp's
// tokenisation of that text (no special tokens parsed or added). Used by tests/test_llamacpp.py
// and tests/test_hf_gguf.py.
import {join} from "node:path";
import {pathToFileURL} from "node:url";

const [path, ...ids] = process.argv.slice(2);
const entry = join(process.env.NODE_LLAMA_CPP, "node_modules", "node-llama-cpp", "dist", "index.js");
const {getLlama} = await import(pathToFileURL(entry).href);
const llama = await getLlama({gpu: false, build: "never", usePrebuiltBinaries: true,
                              skipDownload: true, logLevel: "error"});
const model = await llama.loadModel({modelPath: path, checkTensors: true, useMmap: false});
const context = await model.createContext({contextSize: 64, batchSize: 64, flashAttention: false,
                                           experimentalKvCacheKeyType: "F32",
                                           experimentalKvCacheValueType: "F32"});
const out = await context.getSequence().controlledEvaluate(
    ids.map(t => [Number(t), {generateNext: {logits: true}}]));
const logits = out.map(r => Array.from(r.next.logits));
const text = process.env.ACEM_LLAMACPP_TEXT;
const tokens = text === undefined ? undefined : Array.from(model.tokenize(text, false));
console.log(JSON.stringify({file_type: model.fileInfo.metadata.general.file_type ?? null, logits,
                            tokens}));
await llama.dispose();
