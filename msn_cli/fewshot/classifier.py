"""The classifier of MSN's low-shot evaluation (``logistic_eval.py``): rows centred and
L2-normalised, then a multinomial logistic regression with an L2 penalty and no intercept.

The original fits ``cyanure.MultiClassifier(loss='multiclass-logistic', penalty='l2',
fit_intercept=False)`` with ``lambd = --lambd / n_train``, ``it0=10, tol=1e-3,
solver='auto', seed=0, max_epochs=300``. cyanure minimises ``(1/n) sum(loss) + (lambda/2)
||W||^2``; scikit-learn's ``LogisticRegression`` minimises ``C sum(loss) + (1/2) ||W||^2``:
the same optimum at ``C = 1 / (n lambda) = 1 / --lambd``. cyanure (the original's solver) is
used when it is installed, else scikit-learn; both come with ``pip install 'msn-cli[fewshot]'``.

cyanure runs on one thread (the original: all cores). Its wheel brings its own OpenMP runtime,
and after a fit on several threads torch's float16 matrix products in the same process return
NaN or garbage (cyanure 1.2.2, torch 2.13 CPU): a converted float16 folder would then give
wrong features, and msn verify in the same process a wrong verdict. One thread changes
neither the problem nor its optimum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from msn_cli.errors import UsageError

if TYPE_CHECKING:
    import numpy as np

SOLVERS = ("auto", "cyanure", "sklearn")
INSTALL_HINT = "pip install 'msn-cli[fewshot]'"
MAX_ITER = 300
"""cyanure's ``max_epochs`` in the original (``max_iter`` in cyanure 1.x)."""
SKLEARN_MAX_ITER = 2000
SKLEARN_TOL = 1e-6
"""scikit-learn's L-BFGS stops on the gradient, not on cyanure's duality gap: a tight tolerance
takes it to the optimum both solvers share."""


def normalise_rows(x: np.ndarray) -> np.ndarray:
    """``cyanure.preprocess(x, normalize=True, columns=False, centering=True)``: each row has its
    own mean subtracted, then is scaled to unit L2 norm (a zero row stays zero). float32."""
    import numpy as np

    x = np.asarray(x, dtype=np.float32)
    centred = x - x.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    norm = np.linalg.norm(centred, axis=1, keepdims=True)
    out: np.ndarray = centred / np.where(norm > 0, norm, 1).astype(np.float32)
    return out


def _missing(name: str) -> UsageError:
    return UsageError(f"msn fewshot needs {name}, which is not installed", hint=INSTALL_HINT)


def available(solver: str) -> bool:
    import importlib.util

    module = {"cyanure": "cyanure", "sklearn": "sklearn"}[solver]
    return importlib.util.find_spec(module) is not None


def pick_solver(solver: str) -> str:
    """The solver ``auto`` means here (cyanure, else scikit-learn); refuses one not installed."""
    if solver not in SOLVERS:
        raise UsageError(f"unknown solver '{solver}'", hint="choose " + ", ".join(SOLVERS))
    if solver == "auto":
        if available("cyanure"):
            return "cyanure"
        if available("sklearn"):
            return "sklearn"
        raise _missing("scikit-learn (or cyanure)")
    if not available(solver):
        raise _missing("cyanure" if solver == "cyanure" else "scikit-learn")
    return solver


@dataclass
class Fitted:
    """A fitted classifier: ``predict`` gives class labels for normalised rows."""

    solver: str
    estimator: Any

    def predict(self, x: np.ndarray) -> np.ndarray:
        import numpy as np

        x = np.ascontiguousarray(x, dtype=np.float64)
        out: np.ndarray = np.asarray(self.estimator.predict(x)).astype(np.int64).ravel()
        return out

    def top1(self, x: np.ndarray, labels: np.ndarray) -> float:
        """Top-1 accuracy in percent."""
        return float((self.predict(x) == labels).mean() * 100)


def fit(x: np.ndarray, labels: np.ndarray, lambd: float, solver: str = "auto") -> Fitted:
    """Fit on normalised rows ``x`` with ``lambda = lambd / n`` (see the module docstring)."""
    import numpy as np

    if not lambd > 0:
        raise UsageError(f"--lambd must be positive, not {lambd}")
    solver = pick_solver(solver)
    # float64: at float32 the solvers' own rounding moves a near-tie's prediction with the
    # last bits of the features (1e-6 apart between two faithful implementations)
    x = np.ascontiguousarray(x, dtype=np.float64)
    if solver == "cyanure":
        from cyanure.estimators import Classifier

        lam = lambd / len(x)
        est: Any = Classifier(loss="multiclass-logistic", penalty="l2", fit_intercept=False,
                              lambda_1=lam, lambda_2=lam, tol=1e-3, solver="auto",
                              random_state=0, max_iter=MAX_ITER, duality_gap_interval=10,
                              n_threads=1, verbose=False)
    else:
        from sklearn.linear_model import LogisticRegression

        est = LogisticRegression(C=1 / lambd, fit_intercept=False, tol=SKLEARN_TOL,
                                 max_iter=SKLEARN_MAX_ITER)
    import warnings

    with warnings.catch_warnings():  # a convergence note is no reason to print to the terminal
        warnings.simplefilter("ignore")
        est.fit(x, labels)
    return Fitted(solver, est)
