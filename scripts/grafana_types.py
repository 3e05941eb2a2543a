"""Type-check Grafana dashboards against Grafana's own published types (npm `@grafana/schema`, `make grafana-lint`).

Each dashboard JSON becomes a TypeScript literal typed as `Dashboard`, and each panel's `options` and
`fieldConfig.defaults.custom` as its panel plugin's `Options` and `FieldConfig`; `tsc --strict` then refuses
unknown keys (a misspelt `gridPos`), wrong types and values outside an enum (`"absolut"`). Enums are compared
by the strings Grafana stores. Exit status: tsc's; its errors name the dashboard and the JSON path.

    python scripts/grafana_types.py --node-modules .cache/node/node_modules monitoring/grafana/dashboards/*.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

HEADER = """import type { Dashboard } from "@grafana/schema";
// The JSON form of a type: TypeScript enums (ThresholdsMode, MappingType, ...) as the strings Grafana stores.
type Wire<T> = T extends string ? `${T}` : T extends (infer E)[] ? Wire<E>[] : T extends object ? { [K in keyof T]: Wire<T[K]> } : T;
// Panel options: Grafana fills in the defaults of whatever a dashboard leaves out; unknown keys and bad values stay errors.
type Options<T> = T extends string ? `${T}` : T extends (infer E)[] ? Options<E>[] : T extends object ? { [K in keyof T]?: Options<T[K]> } : T;
"""


def panels(dashboard: dict):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # a collapsed row's panels


def panel_types_file(schema: Path, panel_type: str) -> Path | None:
    """The generated `Options`/`FieldConfig` types of a core panel plugin, if @grafana/schema has them."""
    found = sorted((schema / "dist" / "esm" / "raw" / "composable" / panel_type / "panelcfg").glob("x/*_types.gen.d.ts"))
    return found[0] if found else None


def typescript(paths: list[Path], schema: Path, out: Path) -> str:
    lines = [HEADER]
    imports: dict[str, str] = {}
    for n, path in enumerate(paths):
        dashboard = json.loads(path.read_text())
        lines.append(f"// {path.name}\nexport const dashboard{n}: Wire<Dashboard> = {json.dumps(dashboard, indent=2)};")
        for panel in panels(dashboard):
            types = panel_types_file(schema, panel.get("type", ""))
            if types is None:
                continue
            if panel["type"] not in imports:
                imports[panel["type"]] = f"P{len(imports)}"
                module = Path(os.path.relpath(types, out.parent)).as_posix().removesuffix(".d.ts")
                lines[0] += f'import type * as {imports[panel["type"]]} from "{module}";\n'
            alias = imports[panel["type"]]
            where = f"{path.name} panel {panel.get('title', panel.get('id'))!r}"
            lines.append(f"// {where}\nexport const options_{n}_{panel['id']}: Options<{alias}.Options> = "
                         f"{json.dumps(panel.get('options', {}))};")
            custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom")
            if custom is not None:
                lines.append(f"export const custom_{n}_{panel['id']}: Options<{alias}.FieldConfig> = {json.dumps(custom)};")
    return "\n".join(lines) + "\n"


def located(error: str, source: Path) -> str:
    """A tsc error prefixed with the dashboard and panel of its line (the `// ...` comment above it)."""
    match = re.match(r".*?\((\d+),\d+\): ", error)
    if not match:
        return error
    lines = source.read_text().splitlines()[: int(match.group(1))]
    where = next((line[3:] for line in reversed(lines) if line.startswith("// ") and "Wire" not in line), "?")
    return f"{where}: {error}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--node-modules", type=Path, required=True, help="where @grafana/schema and typescript are")
    parser.add_argument("dashboards", type=Path, nargs="+")
    args = parser.parse_args(argv)
    node_modules = args.node_modules.resolve()
    schema = node_modules / "@grafana" / "schema"
    work = node_modules.parent / "grafana-types"  # next to node_modules, so that imports resolve
    work.mkdir(exist_ok=True)
    source = work / "dashboards.ts"
    source.write_text(typescript(args.dashboards, schema, source))
    (work / "tsconfig.json").write_text(json.dumps({
        "compilerOptions": {"strict": True, "noEmit": True, "module": "esnext", "moduleResolution": "bundler",
                            "target": "es2022", "skipLibCheck": True},
        "files": [source.name]}))
    result = subprocess.run(["node", node_modules / "typescript" / "bin" / "tsc", "-p", work / "tsconfig.json"],
                            capture_output=True, text=True)
    if result.returncode:
        print("\n".join(located(line, source) for line in (result.stdout + result.stderr).strip().splitlines()),
              file=sys.stderr)
        return result.returncode
    print(f"grafana types: ok ({len(args.dashboards)} dashboard(s), @grafana/schema "
          f"{json.loads((schema / 'package.json').read_text())['version']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
