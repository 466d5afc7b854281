"""The docs a user navigates: README.md and docs/*.md.

Every relative link and image points to a file of the repository, every `#anchor` to a heading
of its target page (GitHub's anchor rule), every http(s) link is well-formed (not fetched: no
network), every figure in docs/figures is shown somewhere, and the names the docs use exist:
`kvis.*` names and modules, the keywords of the Python examples, the commands and options of
the `kvis` lines. Nothing here imports TensorFlow: Python names are read from the source with
`ast`, and the CLI's options from the Click group, which loads without TensorFlow.
"""

import ast
import re
import shlex
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
FIGURES = sorted(p for p in (DOCS / "figures").iterdir() if p.is_file())

# Options of other tools that the docs' prose names in inline code.
# scripts/benchmark.py, bench_work.py, compatibility.py
OTHER_TOOLS_OPTIONS = {"--jit", "--memory", "--only", "--record", "--readme", "--no-run"}

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)")
_ATX = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"(!?)\[((?:[^\[\]]|\[[^\]]*\])*)\]"            # [text] or ![alt]
                   r"\(\s*<?([^)\s>]*)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")  # (target "title")
_HTML_LINK = re.compile(r"""<(?:a|img)\b[^>]*?\b(?:href|src)=["']([^"']+)["']""", re.I)
_HTML_ANCHOR = re.compile(r"""<a\b[^>]*?\b(?:name|id)=["']([^"']+)["']""", re.I)
_AUTOLINK = re.compile(r"<(https?://[^>\s]+)>")
_KVIS_NAME = re.compile(r"(?<![\w./-])kvis\.([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?![\w*])")


def anchor(heading):
    """GitHub's anchor of a heading: its text without markup, lower-case, punctuation except
    '-' and '_' removed, each space a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # links and images: their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")        # HTML tags, code marks
    text = re.sub(r"(\*+)(.+?)\1", r"\2", text)                 # emphasis
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def split_code(text):
    """(prose lines with fenced code blanked, [(language, first line number, code)])."""
    prose, blocks, fence = [], [], None
    for number, line in enumerate(text.splitlines(), 1):
        match = _FENCE.match(line)
        if fence is None and match:
            fence, language, code, start = match.group(1), match.group(2), [], number + 1
            prose.append("")
        elif fence is not None and line.strip().startswith(fence[0] * len(fence)) \
                and set(line.strip()) == {fence[0]}:
            blocks.append((language, start, "\n".join(code)))
            fence = None
            prose.append("")
        elif fence is not None:
            code.append(line)
            prose.append("")
        else:
            prose.append(line)
    return prose, blocks


def headings(text):
    """The headings of a page, in order (ATX and setext; not inside fenced code)."""
    prose, _ = split_code(text)
    found = []
    for i, line in enumerate(prose):
        match = _ATX.match(line)
        if match:
            found.append(match.group(2))
        elif i and re.fullmatch(r" {0,3}(=+|-+)\s*", line) and prose[i - 1].strip() \
                and not prose[i - 1].lstrip().startswith(("|", "-", "*", ">")) \
                and not _ATX.match(prose[i - 1]):
            found.append(prose[i - 1].strip())
    return found


def anchors(text):
    """Every anchor a page offers: its headings' (a repeated one gets -1, -2, ...) and the
    HTML anchors it declares."""
    seen, result = {}, set()
    for heading in headings(text):
        slug = anchor(heading)
        result.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    prose, _ = split_code(text)
    result.update(_HTML_ANCHOR.findall("\n".join(prose)))
    return result


def links(text):
    """[(line number, target, is_image)] of a page's links and images outside code."""
    found = []
    prose, _ = split_code(text)
    for number, line in enumerate(prose, 1):
        line = _CODE_SPAN.sub(lambda m: "x" * len(m.group(0)), line)
        found += [(number, m.group(3), m.group(1) == "!") for m in _LINK.finditer(line)]
        found += [(number, target, False) for target in _HTML_LINK.findall(line)]
        found += [(number, target, False) for target in _AUTOLINK.findall(line)]
    return found


def link_problems(page, root=ROOT):
    """One line per broken link or image of `page`; empty when every one resolves."""
    text = page.read_text()
    problems = []
    for number, target, image in links(text):
        where = f"{page.relative_to(root)}:{number}: {'image' if image else 'link'} {target!r}"
        url = urlparse(target)
        if url.scheme in ("http", "https"):
            if "." not in url.netloc or " " in target:
                problems.append(f"{where}: not a well-formed URL")
            continue
        if url.scheme or target.startswith("/") or not target:
            problems.append(f"{where}: not a relative path, #anchor or http(s) URL")
            continue
        path, _, fragment = target.partition("#")
        file = (page.parent / unquote(path)).resolve() if path else page
        if not file.is_relative_to(root.resolve()) or not file.exists():
            problems.append(f"{where}: no such file")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file.read_text()):
            problems.append(f"{where}: no heading with anchor #{fragment} in {file.name}")
        elif fragment and file.suffix != ".md" and not re.fullmatch(r"L\d+(-L\d+)?", fragment):
            problems.append(f"{where}: #{fragment} on a file that has no headings")
        elif image and not file.is_file():
            problems.append(f"{where}: an image that is not a file")
    return problems


# The names the docs use -------------------------------------------------------------------

def _exports():
    tree = ast.parse((ROOT / "kvis" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "_EXPORTS":
            return ast.literal_eval(node.value)
    raise AssertionError("kvis/__init__.py has no _EXPORTS")


def _module_file(module):
    path = ROOT.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _top_level(module):
    """{name: ast node} of a module's top-level functions, classes and assignments."""
    names = {}
    for node in ast.parse(_module_file(module).read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name):
                    names[target.id] = node
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                names[alias.asname or alias.name] = node
    return names


def _resolve(dotted, exports):
    """(module, attribute or None) a `kvis.<dotted>` name refers to, or None if it does not
    exist."""
    parts = dotted.split(".")
    if parts[0] in exports:
        module = exports[parts[0]] or "kvis.synthesis.objectives"
        if exports[parts[0]] is None:
            return (module, parts[1] if len(parts) > 1 else None)
        return (module, parts[0])
    for cut in range(len(parts), 0, -1):
        module = "kvis." + ".".join(parts[:cut])
        if _module_file(module):
            rest = parts[cut:]
            return (module, rest[0] if rest else None)
    return None


def _name_problem(dotted, exports):
    resolved = _resolve(dotted, exports)
    if resolved is None:
        return "no such public name or module"
    module, attribute = resolved
    if attribute is not None and attribute not in _top_level(module):
        return f"{module} defines no {attribute}"
    return None


def _signature(module, name):
    """(positional parameter names, keyword parameter names, *args?, **kwargs?) of a function
    or a class's __init__, or None where there is nothing to check (a plain dataclass)."""
    node = _top_level(module).get(name)
    if isinstance(node, ast.ClassDef):
        node = next((n for n in node.body
                     if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
    if not isinstance(node, ast.FunctionDef):
        return None
    args = node.args
    positional = [a.arg for a in args.posonlyargs + args.args if a.arg != "self"]
    return (positional, positional + [a.arg for a in args.kwonlyargs],
            args.vararg is not None, args.kwarg is not None)


def _call_problems(code, exports):
    """Calls of kvis functions in a Python block whose keywords or positional arguments the
    function does not take."""
    tree = ast.parse(code)
    modules, functions = {}, {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("kvis"):
                    modules[alias.asname or alias.name.split(".")[0]] = alias.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kvis"):
            for alias in node.names:
                name, target = alias.asname or alias.name, f"{node.module}.{alias.name}"
                if node.module == "kvis" and alias.name in exports:
                    if exports[alias.name] is None:
                        modules[name] = "kvis.synthesis.objectives"
                    else:
                        functions[name] = (exports[alias.name], alias.name)
                elif _module_file(target):
                    modules[name] = target
                else:
                    functions[name] = (node.module, alias.name)
    problems = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func, where = node.func, None
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) \
                and func.value.id in modules:
            module = modules[func.value.id]
            if module == "kvis":
                if func.attr not in exports:
                    problems.append(f"kvis.{func.attr}: no such public name")
                    continue
                module = exports[func.attr] or "kvis.synthesis.objectives"
            where = (module, func.attr)
        elif isinstance(func, ast.Name) and func.id in functions:
            where = functions[func.id]
        if where is None or (signature := _signature(*where)) is None:
            continue
        positional, keywords, varargs, varkw = signature
        call = f"{where[0]}.{where[1]}"
        if len(node.args) > len(positional) and not varargs:
            problems.append(f"{call}: {len(node.args)} positional arguments, takes "
                            f"{len(positional)}")
        for keyword in node.keywords:
            if keyword.arg is not None and keyword.arg not in keywords and not varkw:
                problems.append(f"{call}: no parameter {keyword.arg}=")
    return problems


def _kvis_lines(text):
    """[(line number, text)] of the `kvis ...` command lines: in code blocks (a `$ ` prompt
    allowed) and in inline code."""
    prose, blocks = split_code(text)
    found = []
    for language, start, code in blocks:
        if language in ("", "bash", "sh", "shell", "console", "text"):
            for offset, line in enumerate(code.splitlines()):
                line = line.strip().removeprefix("$ ")
                if line.startswith(("kvis ", ".venv/bin/kvis ")):
                    found.append((start + offset, line))
    for number, line in enumerate(prose, 1):
        found += [(number, m.group(2).strip()) for m in _CODE_SPAN.finditer(line)
                  if m.group(2).strip().startswith("kvis ")]
    return found


def _inline_options(text):
    """[(line number, option)] of inline code that starts with an option (`--score logit`)."""
    prose, _ = split_code(text)
    return [(number, m.group(2).split()[0].split("=")[0])
            for number, line in enumerate(prose, 1) for m in _CODE_SPAN.finditer(line)
            if re.match(r"--?[a-z]", m.group(2))]


def _cli():
    from kvis.cli import main

    def options(command):
        return {opt for param in command.params for opt in param.opts + param.secondary_opts
                if opt.startswith("-")} | {"--help", "-h"}

    return {name: options(command) for name, command in main.commands.items()}, options(main)


# The tests ---------------------------------------------------------------------------------

def test_anchor_rule_on_two_headings():
    assert anchor("Attention maps: where the model looks") == "attention-maps-where-the-model-looks"
    assert anchor("The `kvis report` page — Zeiler & Fergus (Fig. 7)") == \
        "the-kvis-report-page--zeiler--fergus-fig-7"
    assert anchor("block2_conv2, [the deconvnet](deconvnet.md)") == "block2_conv2-the-deconvnet"
    page = "# Top\n\n## Speed\n\n```text\n## not a heading\n```\n\n## Speed\n\nSetext\n---\n"
    assert headings(page) == ["Top", "Speed", "Speed", "Setext"]
    assert anchors(page) == {"top", "speed", "speed-1", "setext"}


def test_link_checker_catches_each_kind_of_broken_link(tmp_path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "a.png").write_bytes(b"\x89PNG")
    (tmp_path / "other.md").write_text("# Other\n\n## Exists here\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Here\n\n"
        "[ok](other.md#exists-here) and ![ok](figures/a.png) and [ok](#here) and "
        "<https://example.org/x> and [ok](https://example.org/a_b#c)\n\n"
        "[`code` in the text is fine](other.md)\n\n"
        "[missing file](missing.md) ![missing image](figures/b.png)\n"
        "[missing anchor](other.md#nope) [missing own anchor](#nowhere)\n"
        "[bad url](http://localhost) [absolute](/etc/passwd) [outside](../../x)\n\n"
        "`[in code](nothing.md)`\n\n```markdown\n[in a block](nothing.md)\n```\n")
    assert len(links(page.read_text())) == 13
    problems = link_problems(page, root=tmp_path)
    assert len(problems) == 7, "\n".join(problems)
    for expected in ("'missing.md': no such file", "'figures/b.png': no such file",
                     "#nope in other.md", "#nowhere in page.md", "'http://localhost': not a",
                     "'/etc/passwd': not a relative", "'../../x': no such file"):
        assert sum(expected in problem for problem in problems) == 1, expected


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_and_image_resolves(page):
    found = links(page.read_text())
    assert found, f"{page.name} has no links at all: the parser or the page is wrong"
    problems = link_problems(page)
    assert not problems, f"{len(problems)} of {len(found)} links broken:\n" + "\n".join(problems)


def test_every_figure_is_shown_on_some_page():
    assert FIGURES, "docs/figures is empty"
    shown = {(page.parent / target.partition("#")[0]).resolve()
             for page in PAGES for _, target, image in links(page.read_text()) if image}
    missing = [figure.name for figure in FIGURES if figure.resolve() not in shown]
    assert not missing, f"{len(missing)} of {len(FIGURES)} figures shown nowhere: {missing}"


def test_readme_links_every_page_and_every_page_links_the_glossary():
    readme = {(ROOT / target.partition("#")[0]).resolve()
              for _, target, _ in links((ROOT / "README.md").read_text())}
    pages = sorted(DOCS.glob("*.md"))
    assert len(pages) >= 2
    assert [p.name for p in pages if p.resolve() not in readme] == []
    for page in pages:
        targets = {(page.parent / target.partition("#")[0]).resolve()
                   for _, target, _ in links(page.read_text())}
        assert (ROOT / "README.md").resolve() in targets, f"{page.name} does not link the README"
        if page.name != "glossary.md":
            assert (DOCS / "glossary.md").resolve() in targets, f"{page.name} lacks the glossary"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_kvis_names_in_the_docs_exist(page):
    exports = _exports()
    text = page.read_text()
    names = sorted(set(_KVIS_NAME.findall(text)))
    problems = [f"kvis.{name}: {problem}" for name in names
                if (problem := _name_problem(name, exports))]
    assert not problems, f"{len(problems)} of {len(names)} names:\n" + "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_examples_parse_and_call_kvis_as_it_is(page):
    exports = _exports()
    problems = []
    for language, start, code in split_code(page.read_text())[1]:
        if language != "python":
            continue
        try:
            problems += [f"line {start}+: {p}" for p in _call_problems(code, exports)]
        except SyntaxError as error:
            problems.append(f"line {start + (error.lineno or 1) - 1}: not Python: {error.msg}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_kvis_commands_and_options_in_the_docs_exist(page):
    commands, group_options = _cli()
    every_option = set().union(group_options, *commands.values())
    text = page.read_text()
    problems = []
    for number, line in _kvis_lines(text):
        tokens = shlex.split(line.split(" # ")[0].replace("|", " "), comments=True)[1:]
        after = tokens
        while after and after[0] in group_options:  # kvis --xla COMMAND ...
            after = after[1:]
        if after and after[0] in commands:
            tokens = after
        words = [t for t in tokens if not t.startswith("-")]
        if tokens and tokens[0].startswith("-"):
            command, known = "kvis", group_options
        elif words and words[0] in commands:
            command, known = f"kvis {words[0]}", commands[words[0]]
        else:
            problems.append(f"line {number}: {line!r}: no such command")
            continue
        problems += [f"line {number}: {command} has no option {option}"
                     for option in (t.split("=")[0] for t in tokens if re.match(r"--?[a-z]", t))
                     if option not in known]
    problems += [f"line {number}: no kvis command has the option {option}"
                 for number, option in _inline_options(text)
                 if option not in every_option | OTHER_TOOLS_OPTIONS]
    assert not problems, "\n".join(problems)
