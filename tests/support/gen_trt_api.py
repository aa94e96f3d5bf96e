"""Generate ``trt_api.json``: the Python API of TensorRT's bindings at given releases.

Reads a local clone of NVIDIA/TensorRT (``git show TAG:path``; no network) and lists, per
release, what ``import tensorrt`` exposes:

- every ``py::enum_`` (scope, members and their numeric values from ``include/NvInfer*.h`` /
  ``NvOnnxParser.h`` where the header carries them, else their ordinal) and whether its
  members are exported into the enclosing scope;
- every ``py::class_`` (and ``py::bind_vector``): its Python bases, methods (each overload's
  parameter names; ``name=`` marks a default), static methods, and properties with their
  access (``r`` read-only, ``rw``, ``w`` write-only);
- module functions (``m.def``) and attributes (``m.attr``), plus what the wheel's
  ``tensorrt/__init__.py`` adds in Python (``nptype``, ``volume``, ``Logger.Severity``, ...);
- the option names trtexec parses (``samples/common/sampleOptions.cpp``, without the
  safety-only builder's), so recorded ``trtexec`` lines can be checked per version.

Preprocessor: ``EXPORT_ALL_BINDINGS`` is 1 (the full ``tensorrt`` module, not lean/dispatch),
``ENABLE_INETWORK_SERIALIZE`` and ``_WIN32`` are 0, and pybind11 is >= 2.6.

Optionally (``--wheel-strings VERSION=FILE``) the names are cross-checked against the
``strings`` of a released wheel's ``tensorrt.so`` and the result is stored beside them.

Usage (from the repository root)::

    python tests/support/gen_trt_api.py /path/to/TensorRT 10.3=v10.3.0 10.16=v10.16 11.1=v11.1 \
        --wheel-strings 11.4.0.106=/tmp/trt-11.4.strings --out tests/support/trt_api.json

The tests read only the committed JSON; this script is for regenerating it.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
from pathlib import Path

BINDING_FILES = ("python/src/pyTensorRT.cpp", "python/src/infer/pyFoundationalTypes.cpp",
                 "python/src/infer/pyPlugin.cpp", "python/src/infer/pyGraph.cpp",
                 "python/src/infer/pyCore.cpp", "python/src/infer/pyInt8.cpp",
                 "python/src/infer/pyAlgorithmSelector.cpp", "python/src/parsers/pyOnnx.cpp")
PY_INIT = "python/packaging/bindings_wheel/tensorrt/__init__.py"
HEADERS = ("include/NvInferRuntimeBase.h", "include/NvInferRuntimeCommon.h",
           "include/NvInferRuntimePlugin.h", "include/NvInferPluginBase.h",
           "include/NvInferRuntime.h", "include/NvInfer.h", "include/NvOnnxParser.h",
           "parsers/onnx/NvOnnxParser.h")
TRTEXEC_OPTIONS = "samples/common/sampleOptions.cpp"
MACROS = {"EXPORT_ALL_BINDINGS": True, "ENABLE_INETWORK_SERIALIZE": False,
          "defined(_WIN32)": False, "!defined(WIN32_LEAN_AND_MEAN)": True}
PYBIND_OLD = re.compile(r"PYBIND11_VERSION_MAJOR\s*<\s*2")
DEF_KINDS = {"def": "method", "def_static": "static", "def_property": "property",
             "def_property_readonly": "property_r", "def_readwrite": "property",
             "def_readonly": "property_r", "def_property_static": "property",
             "def_property_readonly_static": "property_r"}


# ------------------------------------------------------------------------------- git access
def git_show(repo: Path, tag: str, path: str) -> str | None:
    r = subprocess.run(["git", "--git-dir", str(repo), "show", f"{tag}:{path}"],
                       capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


def git_commit(repo: Path, tag: str) -> str:
    return subprocess.run(["git", "--git-dir", str(repo), "rev-list", "-n1", tag],
                          capture_output=True, text=True, check=True).stdout.strip()


# ------------------------------------------------------------------------------- C++ lexing
def preprocess(text: str) -> str:
    """Keep the branches of #if/#else/#endif that the full Linux module compiles."""
    out, stack = [], []          # stack of (taking, any_branch_taken)
    for line in text.splitlines():
        s = line.strip()
        m = re.match(r"#\s*(if|ifdef|ifndef|elif|else|endif)\b(.*)", s)
        if not m:
            if all(t for t, _ in stack):
                out.append(line)
            continue
        kind, cond = m.group(1), m.group(2).split("//")[0].strip()
        if kind in ("if", "ifdef", "ifndef"):
            if PYBIND_OLD.search(cond):
                val = False
            elif kind == "ifdef":
                val = MACROS.get(cond, False)
            elif kind == "ifndef":
                val = not MACROS.get(cond, False)
            elif cond in MACROS:
                val = MACROS[cond]
            else:
                raise SystemExit(f"unknown preprocessor condition: {s!r}")
            stack.append((val, val))
        elif kind == "elif":
            raise SystemExit(f"#elif not handled: {s!r}")
        elif kind == "else":
            _, taken = stack.pop()
            stack.append((not taken, True))
        else:
            stack.pop()
    return "\n".join(out)


TOKEN = re.compile(r'R"\((?:.|\n)*?\)"|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\])*\'|//[^\n]*|/\*(?:.|\n)*?\*/'
                   r'|[A-Za-z_]\w*|\d[\w.]*|::|->|\S')


def tokens(text: str) -> list[str]:
    return [t for t in TOKEN.findall(text) if not t.startswith(("//", "/*"))]


def _string(tok: str) -> str | None:
    if tok.startswith('R"('):
        return tok[3:-2]
    if tok.startswith('"'):
        return bytes(tok[1:-1], "utf-8").decode("unicode_escape")
    return None


def _close(toks: list[str], i: int) -> int:
    """Index just past the bracket group opening at ``toks[i]`` ((, {, [ or <)."""
    pairs = {"(": ")", "{": "}", "[": "]"}
    if toks[i] == "<":                       # template arguments: count angle brackets too
        depth = 0
        while True:
            t = toks[i]
            if t in "<([{":
                depth += 1
            elif t in ">)]}":
                depth -= 1
            i += 1
            if depth == 0:
                return i
    depth = 0
    while True:
        t = toks[i]
        if t in pairs:
            depth += 1
        elif t in pairs.values():
            depth -= 1
        i += 1
        if depth == 0:
            return i


def _split_args(toks: list[str], start: int, end: int) -> list[list[str]]:
    """Top-level comma-separated arguments of the group toks[start] .. toks[end-1]."""
    args, cur, depth = [], [], 0
    for t in toks[start + 1:end - 1]:
        if t in "([{":
            depth += 1
        elif t in ")]}":
            depth -= 1
        if t == "," and depth == 0:
            args.append(cur)
            cur = []
        else:
            cur.append(t)
    if cur:
        args.append(cur)
    return args


def _template_args(toks: list[str], start: int, end: int) -> list[str]:
    args, cur, depth = [], [], 0
    for t in toks[start + 1:end - 1]:
        if t in "<([{":
            depth += 1
        elif t in ">)]}":
            depth -= 1
        if t == "," and depth == 0:
            args.append("".join(cur))
            cur = []
        else:
            cur.append(t)
    args.append("".join(cur))
    return args


def _params(args: list[list[str]]) -> list[str]:
    """Parameter names of a .def: ``"x"_a`` / ``py::arg("x")``, ``x=`` when defaulted."""
    names = []
    for a in args:
        name = None
        if len(a) >= 2 and _string(a[0]) is not None and a[1] == "_a":
            name = _string(a[0])
        elif a[:4] == ["py", "::", "arg", "("] and len(a) > 4 and _string(a[4]) is not None:
            name = _string(a[4])
        if name is not None:
            names.append(name + ("=" if "=" in a else ""))
    return names


# ------------------------------------------------------------------------------- headers
def header_enums(texts: list[str]) -> dict[str, list[dict]]:
    """C++ enum name -> [{enumerator: value}] (one dict per declaration of that name)."""
    found: dict[str, list[dict]] = {}
    for text in texts:
        toks = tokens(text)
        i = 0
        while i < len(toks):
            if toks[i] == "enum" and i + 2 < len(toks):
                j = i + 1
                if toks[j] in ("class", "struct"):
                    j += 1
                name = toks[j]
                k = j + 1
                while k < len(toks) and toks[k] not in ("{", ";"):
                    k += 1
                if k < len(toks) and toks[k] == "{":
                    end = _close(toks, k)
                    values, nxt = {}, 0
                    for a in _split_args(toks, k, end):
                        a = [t for t in a if not t.startswith("TRT_DEPRECATED")]
                        if not a or not re.match(r"[A-Za-z_]", a[0]):
                            continue
                        if "=" in a:
                            expr = "".join(a[a.index("=") + 1:])
                            expr = re.sub(r"[A-Za-z_]\w*", lambda m: str(values.get(m.group(0), "x")), expr)
                            try:
                                nxt = int(eval(expr, {"__builtins__": {}}, {}))  # noqa: S307 - digits/ops only
                            except Exception:  # noqa: BLE001
                                pass
                        values[a[0]] = nxt
                        nxt += 1
                    found.setdefault(name, []).append(values)
                    i = end
                    continue
            i += 1
    return found


# ------------------------------------------------------------------------------- bindings
class Api:
    def __init__(self, enum_values: dict[str, list[dict]]):
        self.enum_values = enum_values
        self.enums: dict[str, dict] = {}
        self.classes: dict[str, dict] = {}
        self.functions: dict[str, list] = {}
        self.attributes: dict[str, str] = {}
        self.cpp: dict[str, str] = {}        # C++ type (last component) -> Python path
        self.vars: dict[str, str] = {}       # binding variable -> Python path
        self.enumerators: dict[str, str] = {}  # "Type::kX" -> "Enum.X"

    def scope(self, tok: list[str]) -> str | None:
        name = "".join(tok)
        if name == "m":
            return None
        if name in self.vars:
            return self.vars[name]
        raise SystemExit(f"unknown binding scope {name!r}")

    def cpp_name(self, t: str) -> str:
        return t.split("<")[0].replace("nvinfer1::", "").replace("nvonnxparser::", "")

    def parse(self, text: str) -> None:
        toks = tokens(preprocess(text))
        i = 0
        while i < len(toks):
            if toks[i] == "py" and toks[i + 1] == "::" and toks[i + 2] in ("class_", "enum_", "bind_vector"):
                i = self._binding(toks, i)
            elif toks[i] in self.vars and toks[i + 1] == "." and (i == 0 or toks[i - 1] in (";", "{", "}")):
                i = self._chain(toks, i + 1, self.vars[toks[i]], "class")
            elif toks[i] == "m" and toks[i + 1] == "." and toks[i + 2] in ("def", "attr") and toks[i - 1] in (";", "{", "}"):
                i = self._module(toks, i)
            else:
                i += 1

    def _binding(self, toks, i) -> int:
        kind = toks[i + 2]
        t_end = _close(toks, i + 3)
        targs = _template_args(toks, i + 3, t_end)
        j = t_end
        var = None
        if toks[j] not in ("(", "{"):
            var, j = toks[j], j + 1
        a_end = _close(toks, j)
        args = _split_args(toks, j, a_end)
        scope = self.scope(args[0])
        pyname = _string(args[1][0])
        path = f"{scope}.{pyname}" if scope else pyname
        cpp = self.cpp_name(targs[0])
        if kind == "enum_":
            self.enums[path] = {"cpp": cpp, "members": {}, "exported": False,
                                "arithmetic": any("arithmetic" in "".join(a) for a in args)}
            ent = "enum"
        else:
            bases = [self.cpp[self.cpp_name(b)] for b in targs[1:]
                     if self.cpp_name(b) in self.cpp and self.cpp[self.cpp_name(b)] in self.classes]
            self.classes[path] = {"bases": bases, "methods": {}, "static": {}, "properties": {},
                                  "attributes": {}}
            if any("buffer_protocol" in "".join(a) for a in args):
                self.classes[path]["buffer_protocol"] = True
            ent = "class"
        self.cpp[cpp] = path
        if var:
            self.vars[var] = path
        return self._chain(toks, a_end, path, ent)

    def _chain(self, toks, j, path, ent) -> int:
        while toks[j] == ".":
            name = toks[j + 1]
            if toks[j + 2] != "(":
                raise SystemExit(f"unexpected {toks[j:j + 4]} in the chain of {path}")
            end = _close(toks, j + 2)
            args = _split_args(toks, j + 2, end)
            if ent == "enum" and name == "value":
                member = _string(args[0][0])
                cppv = "".join(args[1]).split("::")[-1]
                self.enums[path]["members"][member] = cppv
                self.enumerators["".join(args[1])] = f"{path}.{member}"
            elif ent == "enum" and name == "export_values":
                self.enums[path]["exported"] = True
            elif name in DEF_KINDS and ent == "class" or (ent == "enum" and name == "def"):
                self._def(path, name, args, ent)
            j = end
        return j

    def _def(self, path, kind, args, ent) -> None:
        if ent == "enum":
            return  # __str__/__repr__ of an enum
        cls = self.classes[path]
        first = args[0]
        if first[:3] in (["py", "::", "init"], ["py", "::", "init_alias"]):
            name = "__init__"
        else:
            name = _string(first[0])
            if name is None:
                raise SystemExit(f"{path}: .{kind} without a name: {' '.join(first)[:80]}")
        what = DEF_KINDS[kind]
        if what == "method":
            cls["methods"].setdefault(name, []).append(_params(args[1:]))
        elif what == "static":
            cls["static"].setdefault(name, []).append(_params(args[1:]))
        else:
            getter = "".join(args[1]) if len(args) > 1 else ""
            setter = "".join(args[2]) if len(args) > 2 and kind == "def_property" else ""
            if what == "property_r":
                access = "r"
            elif kind == "def_readwrite":
                access = "rw"
            elif getter == "nullptr":
                access = "w"
            elif setter and setter != "nullptr" and not setter.startswith(("py::return_value_policy", "py::keep_alive")) \
                    and not setter.endswith("Doc::descr"):
                access = "rw"
            else:
                access = "r"
            cls["properties"][name] = access

    def _module(self, toks, i) -> int:
        if toks[i + 2] == "def":
            end = _close(toks, i + 3)
            args = _split_args(toks, i + 3, end)
            self.functions.setdefault(_string(args[0][0]), []).append(_params(args[1:]))
            return end
        end = _close(toks, i + 3)
        name = _string(toks[i + 4])
        k = end + 1
        val = []
        while toks[k] != ";":
            val.append(toks[k])
            k += 1
        self.attributes[name] = self.enumerators.get("".join(val), "".join(val))
        return k

    # ---- values from the headers
    def resolve_values(self) -> None:
        for path, e in self.enums.items():
            short = e["cpp"].split("::")[-1]
            wanted = set(e["members"].values())
            cand = [d for d in self.enum_values.get(short, []) if wanted <= set(d)]
            src = cand[0] if cand else None
            e["values_from"] = "header" if src else "ordinal"
            e["members"] = {m: (src[c] if src else n) for n, (m, c) in enumerate(e["members"].items())}
            del e["cpp"]

    # ---- the wheel's Python wrapper
    def parse_python(self, text: str) -> None:
        # the template's placeholders, as the build fills them for the ``tensorrt`` module
        text = text.replace("##TENSORRT_MODULE##", "tensorrt")
        text = re.sub(r"##[A-Z_]+##", "X", text)
        tree = ast.parse(text)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                self.functions[node.name] = [[a.arg for a in node.args.args]]
            elif isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) \
                            and t.value.id in self.classes | self.enums:
                        target = self.classes.get(t.value.id) or self.enums.get(t.value.id)
                        src = ast.unparse(node.value)
                        if src in self.enums:
                            self.enums[f"{t.value.id}.{t.attr}"] = dict(self.enums[src], alias_of=src)
                        elif "attributes" in target:
                            target["attributes"][t.attr] = src
                        else:
                            target.setdefault("properties", {})[t.attr] = "r"
            elif isinstance(node, ast.For) and isinstance(node.iter, ast.Call):
                it = ast.unparse(node.iter)
                m = re.match(r"(.+)\.__members__\.items\(\)$", it)
                call = node.body[0].value if node.body and isinstance(node.body[0], ast.Expr) else None
                if m and isinstance(call, ast.Call) and ast.unparse(call.func) == "setattr":
                    cls = ast.unparse(call.args[0])
                    for member in self.enums[m.group(1)]["members"]:
                        self.classes[cls]["attributes"][member] = f"{m.group(1)}.{member}"
            elif isinstance(node, ast.Assign) is False and isinstance(node, ast.AnnAssign):
                pass

    def counts(self) -> dict:
        return {"enums": len(self.enums),
                "enum_members": sum(len(e["members"]) for e in self.enums.values()),
                "classes": len(self.classes),
                "methods": sum(len(c["methods"]) + len(c["static"]) for c in self.classes.values()),
                "properties": sum(len(c["properties"]) for c in self.classes.values()),
                "functions": len(self.functions), "attributes": len(self.attributes)}


def trtexec_options(text: str | None) -> list[str]:
    if text is None:
        return []
    # the safety-only builder (trtexec_safe) parses its own options; leave its body out
    text = re.sub(r"void SafeBuilderOptions::parse\(.*?\n}\n", "", text, flags=re.S)
    # every option a parse function reads is a literal "--name" (help lines start with spaces)
    return sorted(set(re.findall(r'"(--[A-Za-z][A-Za-z0-9]*)"', text)))


def generate(repo: Path, version: str, tag: str) -> dict:
    headers = [t for t in (git_show(repo, tag, h) for h in HEADERS) if t]
    api = Api(header_enums(headers))
    files = []
    for f in BINDING_FILES:
        text = git_show(repo, tag, f)
        if text is not None:
            files.append(f)
            api.parse(text)
    api.resolve_values()
    init = git_show(repo, tag, PY_INIT)
    if init:
        files.append(PY_INIT)
        api.parse_python(init)
    opts = trtexec_options(git_show(repo, tag, TRTEXEC_OPTIONS))
    return {"tag": tag, "commit": git_commit(repo, tag), "files": files,
            "counts": api.counts(), "enums": api.enums, "classes": api.classes,
            "functions": api.functions, "attributes": api.attributes, "trtexec_options": opts}


def _names(v: dict) -> set[str]:
    names = set(v["enums"]) | set(v["classes"]) | set(v["functions"]) | set(v["attributes"])
    for e in v["enums"].values():
        names |= set(e["members"])
    for c in v["classes"].values():
        names |= set(c["methods"]) | set(c["static"]) | set(c["properties"])
    return {n.split(".")[-1] for n in names if not n.startswith("__")}


def wheel_check(versions: dict, wheel: str, strings_file: Path, base: str, removed_from: str) -> dict:
    """Compare the ``strings`` of a released wheel's ``tensorrt.so`` with a source listing.

    pybind11 keeps every bound name as a C string; the linker may merge a name into the tail
    of a longer one (``set_output_type`` inside ``reset_output_type``), so a name is *present*
    when some string ends with it. Names that ``base`` dropped relative to ``removed_from``
    must not be a whole string of their own (they may still be words inside docstrings)."""
    lines = strings_file.read_text(errors="replace").splitlines()
    whole = set(lines)
    tails = {ln[i:] for ln in lines if len(ln) < 80 for i in range(len(ln))}
    have = _names(versions[base])
    python_level = set(versions[base]["functions"]) - {n for n in versions[base]["functions"]
                                                       if n in tails}
    missing = sorted(n for n in have if n not in tails and n not in python_level)
    dropped = sorted(_names(versions[removed_from]) - have)
    return {"wheel": wheel, "compared_with": base, "names": len(have),
            "names_missing_in_wheel": missing,
            "python_level_names": sorted(python_level),
            "names_dropped_since": removed_from, "dropped": len(dropped),
            "dropped_names": dropped,
            "dropped_but_bound_in_wheel": sorted(n for n in dropped if n in whole)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("repo", type=Path, help="NVIDIA/TensorRT git directory (bare or .git)")
    ap.add_argument("versions", nargs="+", help="LABEL=TAG, e.g. 10.3=v10.3.0")
    ap.add_argument("--wheel-strings", action="append", default=[],
                    help="WHEEL_VERSION=STRINGS_FILE:BASE_LABEL:OLD_LABEL")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("trt_api.json"))
    a = ap.parse_args(argv)
    repo = a.repo if (a.repo / "HEAD").is_file() else a.repo / ".git"
    out = {"generator": "tests/support/gen_trt_api.py",
           "source": "github.com/NVIDIA/TensorRT python/src (pybind11 bindings), "
                     "python/packaging/bindings_wheel/tensorrt/__init__.py, include/*.h, "
                     "samples/common/sampleOptions.cpp",
           "versions": {}, "wheel_checks": []}
    for spec in a.versions:
        label, tag = spec.split("=", 1)
        out["versions"][label] = generate(repo, label, tag)
        print(label, tag, out["versions"][label]["commit"], out["versions"][label]["counts"],
              file=sys.stderr)
    for spec in a.wheel_strings:
        wheel, rest = spec.split("=", 1)
        path, base, old = rest.rsplit(":", 2)
        out["wheel_checks"].append(wheel_check(out["versions"], wheel, Path(path), base, old))
        print(json.dumps(out["wheel_checks"][-1])[:2000], file=sys.stderr)
    a.out.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
