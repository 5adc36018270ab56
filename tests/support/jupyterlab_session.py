"""Test / benchmark helper: a real JupyterLab server on localhost, driven by headless Chromium.

``lab_session(notebook, workdir)`` starts ``python -m jupyterlab`` (this interpreter's) on 127.0.0.1 with a
token, in a throw-away HOME / config / runtime / settings / workspaces folder, with announcements, update
checks and the extension manager's PyPI access off, and ``window.jupyterapp`` exposed. It opens the
notebook in Chromium (every request that is not to the server is aborted) and yields a :class:`LabPage`
that runs all cells, finds the explorer widgets and changes their controls, timing each change in the
page. The server, its kernels and the browser are stopped on exit, also on failure.

The kernel inherits this process's environment (``WORKBENCH_CACHE``, ``HF_HUB_OFFLINE``, ...); HOME
moves to the temporary folder, so the workbench and Hugging Face cache folders are resolved first.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SKIP_MESSAGE = "needs headless Chromium and Playwright: apt-get install chromium && pip install playwright"

# JupyterLab user settings for a quiet, deterministic session.
SETTINGS = {
    # no "receive official Jupyter news?" toast over the controls, no update check
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    # every cell (and its widget views) stays in the DOM, whatever the scroll position
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
}


@dataclass(frozen=True)
class Control:
    """One control of one explorer: ``explorer`` (a name given to :meth:`LabPage.mark_explorers`), the
    control's ipywidgets ``description`` and its ``kind`` ('dropdown', 'toggle' or 'button')."""

    explorer: str
    description: str
    kind: str = "dropdown"


def browser_available() -> str | None:
    """None when Chromium and Playwright are there; otherwise why not (a skip reason)."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing; " + SKIP_MESSAGE
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed; " + SKIP_MESSAGE
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc), deepest last."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parents.items() if pp in frontier]
        found += kids
        frontier = kids
    return found


class LabServer:
    """``python -m jupyterlab`` on 127.0.0.1 serving ``root``; use as a context manager."""

    def __init__(self, root: Path, home: Path, log_path: Path | None = None):
        self.root, self.home = Path(root), Path(home)
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path or self.home / "jupyterlab.log"
        self.process: subprocess.Popen | None = None

    def environment(self) -> dict[str, str]:
        from workbench._paths import cache_root

        env = dict(os.environ)
        # resolved before HOME moves, so the kernel reads the same caches as this process
        env["WORKBENCH_CACHE"] = str(cache_root().resolve())
        env.setdefault("HF_HOME", str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"))
        folders = {"HOME": "home", "JUPYTER_CONFIG_DIR": "config", "JUPYTER_DATA_DIR": "data",
                   "JUPYTER_RUNTIME_DIR": "runtime", "IPYTHONDIR": "ipython",
                   "JUPYTERLAB_SETTINGS_DIR": "settings", "JUPYTERLAB_WORKSPACES_DIR": "workspaces"}
        for var, name in folders.items():
            (self.home / name).mkdir(parents=True, exist_ok=True)
            env[var] = str(self.home / name)
        env.pop("JUPYTER_PATH", None)
        env.pop("JUPYTER_PREFER_ENV_PATH", None)
        env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # ipykernel's debugger warning is noise here
        for rel, values in SETTINGS.items():
            path = self.home / "settings" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        return env

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
            "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}", "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
        ] + (["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])

    def start(self, timeout: float = 120.0) -> None:
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.command(), env=self.environment(), cwd=self.root, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.api("status"), timeout=2) as r:
                    if r.status == 200:
                        return
            except (TimeoutError, urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.25)
        raise TimeoutError(f"jupyter lab did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def api(self, path: str) -> str:
        return f"{self.base}/api/{path}?token={self.token}"

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}?token={self.token}"

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Ask the server to shut down (it stops its kernels), then end what is left of its process tree."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        tree = _children(proc.pid)  # kernels run in sessions of their own: collect them while we can
        with contextlib.suppress(OSError, urllib.error.URLError):
            urllib.request.urlopen(urllib.request.Request(self.api("shutdown"), method="POST"), timeout=5).close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            alive = [p for p in tree if Path(f"/proc/{p}").exists()]
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            if proc.poll() is not None and not any(Path(f"/proc/{p}").exists() for p in tree):
                break
        proc.wait(timeout=5)

    def __enter__(self) -> LabServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# ------------------------------------------------------------------ in-page scripts
_STATE_JS = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.content || !panel.sessionContext) return null;
  const session = panel.sessionContext.session;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code').map(c => ({
    count: c.model.executionCount,
    errors: c.model.outputs.toJSON().filter(o => o.output_type === 'error').map(o => `${o.ename}: ${o.evalue}`),
  }));
  return {kernel: session && session.kernel ? session.kernel.status : null, cells};
}"""

_MARK_JS = """(markers) => {
  const panel = window.jupyterapp.shell.currentWidget;
  const found = {};
  for (const cell of panel.content.widgets) {
    const source = cell.model.sharedModel.getSource();
    for (const [name, text] of Object.entries(markers)) {
      if (source.includes(text)) {
        const out = cell.node.querySelector('.jp-OutputArea');
        if (out) { out.dataset.explorer = name; found[name] = true; }
      }
    }
  }
  return Object.keys(found);
}"""

_RENDERED_JS = """(name) => {
  const root = document.querySelector(`[data-explorer="${name}"]`);
  if (!root) return null;
  const plots = Array.from(root.querySelectorAll('.js-plotly-plot'));
  return {
    views: root.querySelectorAll('.widget-vbox, .jupyter-widgets').length,
    controls: root.querySelectorAll('.widget-dropdown select, .widget-toggle-buttons button').length,
    plots: plots.length,
    drawn: plots.filter(p => p.querySelector('svg.main-svg') && Array.isArray(p.data)).length,
    with_data: plots.filter(p => Array.isArray(p.data) && p.data.length > 0).length,
    // figures inside an element with layout containment (a redraw lays out only its figure, not the page)
    contained: plots.filter(p => {
      for (let e = p; e && e !== root; e = e.parentElement) if (getComputedStyle(e).contain.includes('layout')) return true;
      return false;
    }).length,
    text: root.innerText.slice(0, 20000),
  };
}"""

# Change one control as a user would (select's change event / button click), then watch the explorer's
# view (everything in its output area but the control) with a MutationObserver: first_ms / last_ms are
# the first and last DOM mutations after the change, taken as settled after quiet_ms without any.
_CHANGE_JS = """async ({name, description, kind, quietMs, timeoutMs}) => {
  const root = document.querySelector(`[data-explorer="${name}"]`);
  if (!root) return {error: `no explorer ${name} on the page`};
  const labelled = (sel, labelSel) => Array.from(root.querySelectorAll(sel)).find(el => {
    const label = el.querySelector(labelSel);
    return label && label.textContent.trim() === description;
  });
  let control, act, chosen;
  if (kind === 'dropdown') {
    control = labelled('.widget-dropdown', 'label');
    const select = control && control.querySelector('select');
    if (!select || select.options.length < 2) return {error: `no dropdown '${description}' with 2+ options in ${name}`};
    const next = (select.selectedIndex + 1) % select.options.length;
    chosen = select.options[next].textContent.replace(/\u00a0/g, ' ');
    act = () => { select.selectedIndex = next; select.dispatchEvent(new Event('change', {bubbles: true})); };
  } else if (kind === 'button') {
    control = Array.from(root.querySelectorAll('button.widget-button')).find(b => b.textContent.trim() === description);
    if (!control) return {error: `no button '${description}' in ${name}`};
    chosen = description;
    const button = control;
    act = () => button.click();
  } else {
    control = labelled('.widget-toggle-buttons', '.widget-label');
    const buttons = control ? Array.from(control.querySelectorAll('button')) : [];
    if (buttons.length < 2) return {error: `no toggle buttons '${description}' in ${name}`};
    const current = buttons.findIndex(b => b.classList.contains('mod-active'));
    const button = buttons[(current + 1) % buttons.length];
    chosen = button.textContent.trim();
    act = () => button.click();
  }
  const view = () => {
    const svgs = Array.from(root.querySelectorAll('.js-plotly-plot svg.main-svg'), s => s.outerHTML).join('');
    const htmls = Array.from(root.querySelectorAll('.widget-html'), h => h.innerHTML).join('');
    return svgs + '\\u0000' + htmls;
  };
  const before = view();
  let first = null, last = null;
  const observer = new MutationObserver(records => {
    const now = performance.now();
    if (records.some(r => !control.contains(r.target))) { if (first === null) first = now; last = now; }
  });
  observer.observe(root, {subtree: true, childList: true, attributes: true, characterData: true});
  const t0 = performance.now();
  act();
  const changed = await new Promise(resolve => {
    const tick = () => {
      const now = performance.now();
      if (last !== null && now - last > quietMs && view() !== before) resolve(true);
      else if (now - t0 > timeoutMs) resolve(false);
      else setTimeout(tick, 25);
    };
    tick();
  });
  observer.disconnect();
  return {chosen, changed, first_ms: first === null ? null : first - t0, last_ms: last === null ? null : last - t0};
}"""


class LabPage:
    """The notebook open in JupyterLab, in one Chromium page."""

    def __init__(self, page, server: LabServer):
        self.page, self.server = page, server
        self.console: list[str] = []
        self.refused: list[str] = []  # requests to anything but the server (aborted)
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    def open(self, notebook: str, timeout: float = 120.0) -> None:
        self.page.goto(self.server.url(f"lab/tree/{notebook}"), wait_until="domcontentloaded")
        self.page.wait_for_function(
            "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
            " return !!(w && w.sessionContext && w.content && w.content.widgets.length); }",
            timeout=timeout * 1000)
        # the kernel is up and idle before we run anything
        self.page.evaluate("async () => { await window.jupyterapp.shell.currentWidget.sessionContext.ready; }")
        self.page.wait_for_function(
            "() => { const s = window.jupyterapp.shell.currentWidget.sessionContext.session;"
            " return !!(s && s.kernel && s.kernel.status === 'idle'); }", timeout=timeout * 1000)

    def run_all(self, timeout: float = 900.0) -> float:
        """Run every cell; wait until all have run (or one failed). Returns the seconds it took.

        Raises AssertionError with the error outputs when a cell fails, TimeoutError past ``timeout``."""
        start = time.monotonic()
        self.page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
        while True:
            time.sleep(0.5)
            state = self.page.evaluate(_STATE_JS)
            errors = [e for c in state["cells"] for e in c["errors"]]
            if errors:
                raise AssertionError("a cell failed in JupyterLab:\n" + "\n".join(errors))
            if state["kernel"] == "idle" and all(c["count"] is not None for c in state["cells"]):
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"cells still running after {timeout:.0f} s: {state}")

    def mark_explorers(self, markers: dict[str, str]) -> list[str]:
        """Tag the output area of the cell whose source contains ``markers[name]`` as explorer ``name``."""
        return self.page.evaluate(_MARK_JS, markers)

    def rendered(self, name: str) -> dict | None:
        """What explorer ``name`` shows: widget views, controls, plotly figures (drawn: with an SVG)."""
        return self.page.evaluate(_RENDERED_JS, name)

    def wait_rendered(self, name: str, timeout: float = 60.0) -> dict | None:
        """Wait until explorer ``name`` shows controls and every plotly figure in it is drawn."""
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.rendered(name)
            if state and state["controls"] and state["plots"] and state["drawn"] == state["plots"]:
                return state
            time.sleep(0.25)
        return state

    def _text_input(self, explorer: str, description: str):
        box = self.page.locator(f'[data-explorer="{explorer}"] .widget-text').filter(
            has=self.page.get_by_text(description, exact=True))
        return box.locator("input")

    def fill(self, explorer: str, description: str, value: str) -> str:
        """Type ``value`` into explorer ``explorer``'s text box ``description`` as a user would; returns what it held."""
        field = self._text_input(explorer, description)
        field.scroll_into_view_if_needed()
        before = field.input_value()
        field.fill(value)
        return before

    def html_texts(self, explorer: str) -> list[str]:
        """The text of every HTML widget of explorer ``explorer`` (its summaries, details and status lines)."""
        return self.page.evaluate(
            """(name) => Array.from(document.querySelectorAll(`[data-explorer="${name}"] .widget-html`),
                                    h => h.innerText)""", explorer)

    def wait_html_text(self, explorer: str, needle: str, timeout: float = 60.0) -> str | None:
        """The first HTML widget text of ``explorer`` that contains ``needle``, once one does (None after ``timeout``):
        a computation's status changes several times, and its end can come after a quiet spell."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [t for t in self.html_texts(explorer) if needle in t]
            if found:
                return found[0]
            time.sleep(0.25)
        return None

    def button(self, explorer: str, description: str) -> dict | None:
        """Explorer ``explorer``'s button labelled ``description``: {"disabled": ...}, or None when none is."""
        return self.page.evaluate(
            """([name, description]) => {
              const root = document.querySelector(`[data-explorer="${name}"]`);
              const b = root && Array.from(root.querySelectorAll('button.widget-button'))
                .find(b => b.textContent.trim() === description);
              return b ? {disabled: b.disabled} : null;
            }""", [explorer, description])

    def change(self, control: Control, quiet_ms: int = 750, timeout_ms: int = 60000) -> dict:
        """Move ``control`` to its next option; returns chosen, changed, first_ms, last_ms (or error)."""
        self.page.locator(f'[data-explorer="{control.explorer}"]').scroll_into_view_if_needed()
        return self.page.evaluate(_CHANGE_JS, {"name": control.explorer, "description": control.description,
                                               "kind": control.kind, "quietMs": quiet_ms, "timeoutMs": timeout_ms})


def copy_notebook(source: Path, folder: Path) -> str:
    """A copy of ``source`` in ``folder`` without outputs (so 'every cell ran' is visible); its name."""
    import nbformat

    nb = nbformat.read(source, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, folder / source.name)
    return source.name


@contextlib.contextmanager
def lab_session(notebook: Path, workdir: Path, *, viewport=(1400, 1000)):
    """Yield a :class:`LabPage` with ``notebook`` (a copy, in ``workdir``/root) open in JupyterLab."""
    from playwright.sync_api import sync_playwright

    root, home = Path(workdir) / "root", Path(workdir) / "home"
    root.mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    name = copy_notebook(Path(notebook), root)
    with LabServer(root, home) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
            refused: list[str] = []

            def only_the_server(route):  # anything else the page asks for is refused (and noted)
                if route.request.url.startswith(server.base):
                    route.continue_()
                else:
                    refused.append(route.request.url)
                    route.abort()

            context.route("**/*", only_the_server)
            lab = LabPage(context.new_page(), server)
            lab.refused = refused
            lab.open(name)
            yield lab
        finally:
            browser.close()

