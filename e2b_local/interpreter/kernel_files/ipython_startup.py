"""E2B's extra result formats for the IPython kernels of the code-interpreter template (e2b-local).

Run by every IPython kernel at start (`InteractiveShellApp.exec_files`, set in /etc/ipython). It adds:

- `e2b/data` (the SDK's `Result.data`): a pandas DataFrame as {column: [values, ...]};
- `e2b/chart` (`Result.chart`): a matplotlib Figure described by `e2b_charts.chart_figure_to_dict`
  (E2B's own extractor, published on PyPI);
- `application/json` for plain dicts and lists (numpy values included), as E2B's template does;
- Pillow images shown by `Image.show()` or saved to a path are displayed, as on E2B;
- the user's site-packages directory is created and on sys.path, so that `pip install --user` done
  after the kernel started can be imported without a restart;
- a flush of stdout or stderr with nothing written returns at once (see below).

Nothing heavy is imported here: DataFrames and Figures are recognised by their class names, and
pandas, matplotlib or e2b_charts are only used once such an object is displayed, which keeps the
kernel's start fast. Everything is defined inside one function that deletes itself, so the user's
namespace stays clean.
"""


def _e2b_local_setup() -> None:
    import importlib.machinery
    import json
    import math
    import os
    import site
    import sys

    import IPython
    from IPython.core.formatters import BaseFormatter
    from traitlets import ObjectName, Unicode

    shell = IPython.get_ipython()
    if shell is None:
        return

    def without_nan(value: object) -> object:
        # JSON has no NaN or infinity; E2B's serializer writes them as null.
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: without_nan(v) for k, v in value.items()}
        if isinstance(value, list):
            return [without_nan(v) for v in value]
        return value

    def plain(value: object) -> object:
        # Fallback converter for json.dumps: numpy scalars and arrays, timestamps, sets, pandas' NaT and NA.
        if type(value).__name__ in ("NaTType", "NAType"):
            return None
        if hasattr(value, "tolist"):
            return value.tolist()
        if hasattr(value, "isoformat"):
            return value.isoformat()
        if isinstance(value, (set, frozenset)):
            return list(value)
        raise TypeError(f"{type(value).__name__} is not JSON serializable")

    def to_json(value: object) -> object:
        """A JSON-compatible copy of `value`, or None when it holds something JSON cannot."""
        try:
            return json.loads(json.dumps(value, default=plain, allow_nan=False))
        except ValueError:
            try:
                return without_nan(json.loads(json.dumps(value, default=plain)))
            except (TypeError, ValueError, RecursionError):
                return None
        except (TypeError, RecursionError):
            return None

    def dataframe_columns(frame: object) -> object:
        columns = frame.to_dict(orient="list")  # type: ignore[attr-defined]
        return to_json({str(name): values for name, values in columns.items()})

    def figure_chart(figure: object) -> object:
        try:
            from e2b_charts import chart_figure_to_dict

            return chart_figure_to_dict(figure)
        except Exception:
            return None

    class DataFormatter(BaseFormatter):
        """The `e2b/data` MIME type."""

        format_type = Unicode("e2b/data")
        print_method = ObjectName("_repr_e2b_data_")
        _return_type = (dict,)

    def is_figure(value: object) -> bool:
        return any(c.__name__ == "Figure" and c.__module__ == "matplotlib.figure" for c in type(value).__mro__)

    class ChartFormatter(BaseFormatter):
        """The `e2b/chart` MIME type.

        Figures are recognised here rather than registered as a type: matplotlib's inline backend
        removes every formatter's Figure entry when pyplot is set up.
        """

        format_type = Unicode("e2b/chart")
        print_method = ObjectName("_repr_e2b_chart_")
        _return_type = (dict,)

        def __call__(self, obj: object) -> object:
            if self.enabled and is_figure(obj):
                return figure_chart(obj)
            return super().__call__(obj)

    formatters = shell.display_formatter.formatters
    data = DataFormatter(parent=shell.display_formatter)
    # pandas 3 reports its classes as members of the top-level package, older versions did not.
    for module in ("pandas", "pandas.core.frame"):
        data.for_type_by_name(module, "DataFrame", dataframe_columns)
    formatters["e2b/data"] = data
    formatters["e2b/chart"] = ChartFormatter(parent=shell.display_formatter)
    formatters["application/json"].for_type(dict, to_json)
    formatters["application/json"].for_type(list, to_json)

    # User installs: site skips ~/.local/lib/pythonX.Y/site-packages when it does not exist at start,
    # and a directory missing at start would never be looked at again by the import system.
    if site.ENABLE_USER_SITE:
        user_site = site.getusersitepackages()
        try:
            os.makedirs(user_site, exist_ok=True)
        except OSError:
            pass
        else:
            if user_site not in sys.path:
                system = [i for i, p in enumerate(sys.path) if p.endswith(("site-packages", "dist-packages"))]
                sys.path.insert(system[0] if system else len(sys.path), user_site)
                site.addsitedir(user_site)  # its .pth files

    class PillowHook:
        """Patches PIL.Image when the user imports it, without importing it now."""

        def find_spec(self, name: str, path: object = None, target: object = None) -> object:
            if name != "PIL.Image":
                return None
            sys.meta_path.remove(self)
            spec = importlib.machinery.PathFinder.find_spec(name, path)  # type: ignore[arg-type]
            if spec is None or spec.loader is None:
                return spec
            load = spec.loader.exec_module

            def exec_module(module: object) -> None:
                load(module)  # type: ignore[arg-type]
                patch_pillow(module)

            spec.loader.exec_module = exec_module  # type: ignore[method-assign]
            return spec

    def patch_pillow(module: object) -> None:
        from IPython.display import display

        image_class = module.Image  # type: ignore[attr-defined]
        save = image_class.save

        def save_and_display(self: object, fp: object, format: object = None, **params: object) -> object:
            if isinstance(fp, (str, os.PathLike)):
                display(self)
            return save(self, fp, format, **params)

        def show(self: object, title: object = None) -> None:
            display(self)

        image_class.save = save_and_display
        image_class.show = show

    if "PIL.Image" not in sys.modules:
        sys.meta_path.insert(0, PillowHook())

    # ipykernel flushes stdout and stderr six times in every execution, and each flush waits for its
    # IOPub thread even when nothing was written: about 0.5 ms of a 2.7 ms run_code. A flush with
    # nothing buffered returns at once; the order of outputs is kept all the same, since everything
    # the kernel publishes goes through that one thread's queue.
    try:
        from ipykernel.iostream import OutStream
    except ImportError:
        OutStream = None
    if OutStream is not None and isinstance(getattr(sys.stdout, "_buffers", None), dict):
        flush = OutStream.flush

        def flush_if_written(self: object) -> None:
            if self._buffers or getattr(self, "echo", None) is not None:  # type: ignore[attr-defined]
                flush(self)  # type: ignore[arg-type]

        OutStream.flush = flush_if_written  # type: ignore[method-assign]


_e2b_local_setup()
del _e2b_local_setup
