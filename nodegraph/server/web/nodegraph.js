// nodegraph's extension to ComfyUI's editor.
//
// 1. Typed sockets. A socket's static type may be a union ("LATENT,LATENT[sd],LATENT[sdxl]"):
//    what a sampler makes is known only once its model is connected. Whenever links or widgets
//    change, this asks the server to type the graph as `nodegraph validate` does
//    (POST /nodegraph/types) and gives every socket its inferred type, so that the editor
//    refuses a link validation would refuse (an SDXL latent into an SD sampler).
// 2. Graphs in the API format. The editor's default graph is nodegraph's own (graphs/quickstart.json), and
//    API-format graphs (our templates, a PNG with only a "prompt" chunk) load with loadApiJson.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const DEBOUNCE_MS = 50;
let timer = null;
let latest = 0;
let typed = Promise.resolve();

// ComfyUI's own default graph, of core nodes nodegraph has not: opening it opens ours instead.
function isComfyDefault(data) {
  return data === undefined || data === null || JSON.stringify(data) === window.comfyAPI?.defaultGraph?.defaultGraphJSON;
}

function isApiPrompt(data) {
  if (!data || typeof data !== "object" || Array.isArray(data) || "nodes" in data) return false;
  const nodes = Object.values(data);
  return nodes.length > 0 && nodes.every((node) => node && typeof node === "object" && "class_type" in node);
}

async function retype() {
  const request = ++latest;
  const { output } = await app.graphToPrompt();
  const response = await api.fetchApi("/nodegraph/types", { method: "POST", body: JSON.stringify(output) });
  if (!response.ok || request !== latest) return;  // a newer request is on its way
  const sockets = await response.json();
  for (const [id, types] of Object.entries(sockets)) {
    const node = app.graph.getNodeById(isNaN(+id) ? id : +id);
    if (!node) continue;
    for (const input of node.inputs ?? []) {
      if (input.name in types.inputs) input.type = types.inputs[input.name];
    }
    (node.outputs ?? []).forEach((output, index) => {
      if (index < types.outputs.length) output.type = types.outputs[index];
    });
  }
  app.graph.setDirtyCanvas(true, true);
}

function scheduleRetype() {
  clearTimeout(timer);
  typed = new Promise((resolve) => {
    timer = setTimeout(() => retype().catch(console.error).finally(resolve), DEBOUNCE_MS);
  });
}

app.registerExtension({
  name: "nodegraph.types",

  async setup() {
    const loadGraphData = app.loadGraphData.bind(app);
    app.loadGraphData = async function (graphData, ...rest) {
      if (isComfyDefault(graphData)) {
        const response = await api.fetchApi("/nodegraph/editor/default");
        if (response.ok) return app.loadApiJson(await response.json(), "nodegraph");
      } else if (isApiPrompt(graphData)) {
        const name = typeof rest[2] === "string" ? rest[2] : "nodegraph";
        return app.loadApiJson(graphData, name);
      }
      return loadGraphData(graphData, ...rest);
    };
    // For scripts and tests: wait until the sockets are typed after the last change.
    window.nodegraph = { retype: () => { scheduleRetype(); return typed; }, typed: () => typed };
  },

  nodeCreated(node) {
    const onConnectionsChange = node.onConnectionsChange;
    node.onConnectionsChange = function (...args) {
      const result = onConnectionsChange?.apply(this, args);
      scheduleRetype();
      return result;
    };
    for (const widget of node.widgets ?? []) {
      const callback = widget.callback;
      widget.callback = function (...args) {
        const result = callback?.apply(this, args);
        scheduleRetype();
        return result;
      };
    }
  },

  async afterConfigureGraph() {
    scheduleRetype();
  },
});
