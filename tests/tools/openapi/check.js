// check.js: validates ursa-inference's /openapi.json with swagger-parser
// (OpenAPI 3 schema and references), then holds it against the server:
// every route of services/inference/routes.c is documented, and every
// documented path and method is answered (not 404 or 405).
//   node check.js BASE_URL ROUTES_C
const fs = require("fs");
const SwaggerParser = require("@apidevtools/swagger-parser");

async function main() {
  const [base, routesC] = process.argv.slice(2);
  const doc = await (await fetch(base + "/openapi.json")).json();
  await SwaggerParser.validate(JSON.parse(JSON.stringify(doc)));
  const paths = Object.keys(doc.paths);
  const problems = [];
  // the route table: {"/path", "GET,HEAD", handler, "name", body}
  const table = [...fs.readFileSync(routesC, "utf8").matchAll(/\{"(\/[^"]*)", "([A-Z,]+)", h_/g)];
  if (table.length < 10) problems.push("only " + table.length + " routes read from " + routesC);
  for (const [, route, methods] of table) {
    for (const m of methods.split(",").filter((m) => m !== "HEAD")) {
      const match = route.endsWith("/*")
        ? paths.filter((p) => p.startsWith(route.slice(0, -1)))
        : paths.filter((p) => p === route);
      if (!match.some((p) => doc.paths[p][m.toLowerCase()]))
        problems.push(`${m} ${route} is served but not documented`);
    }
  }
  for (const p of paths) {
    for (const m of Object.keys(doc.paths[p])) {
      const url = base + p.replace("{name}", "demo.onnx").replace("{version}", "1");
      const body = p.endsWith("/infer") ? "{}" : undefined; // admin calls take none
      const r = await fetch(url, { method: m.toUpperCase(), body });
      if (r.status === 404 || r.status === 405)
        problems.push(`${m.toUpperCase()} ${p} is documented but answers ${r.status}`);
      if (!doc.paths[p][m].responses[String(r.status)])
        problems.push(`${m.toUpperCase()} ${p} answered ${r.status}, which is not documented`);
    }
  }
  if (problems.length) {
    console.error(problems.join("\n"));
    process.exit(1);
  }
  console.log(`openapi: valid; ${paths.length} paths, ${table.length} routes agree`);
}
main().catch((e) => {
  console.error("openapi: " + e.message);
  process.exit(1);
});
