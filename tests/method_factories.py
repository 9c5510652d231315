"""How the contract tests build each registered method: srbench's own tiny builders.

Every method registered in srbench must have an entry in :data:`srbench.testing.factories.FACTORIES`
(the contract test fails otherwise).
"""

from srbench.testing.factories import FACTORIES

__all__ = ["FACTORIES"]
