"""The learning tasks (data, model, loss, evaluation); MNLI + OPT lives here."""
