"""Queries: SELECT, WITH, VALUES, TABLE, parenthesised; DML that EXPLAIN only plans; the
expressions of SET and DO.

A query is parsed by sqlglot with every literal replaced by a fixed placeholder first;
every node of the tree must be of an allowed kind, and every `name(` in the text must be
grammar where it stands or a call of a function on the dialect's read-safe allowlist, by
its name as written (not sqlglot's normalised class, which hides the name).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlglot import exp
from sqlglot.errors import ParseError
from sqlglot.tokenizer_core import Token, TokenType

from policy.classify.data import names
from policy.classify.data.common import (
    GRAMMAR_ANYWHERE,
    KNOWN_EFFECTS,
    TYPE_NAMES,
)
from policy.classify.lexers import LITERAL_TOKEN_TYPES, sqlglot_dialect
from policy.classify.tokens import closing_paren, word_of
from policy.classify.verdicts import READ, UNKNOWN, WRITE, Finding, Verdict, verdict_of

if TYPE_CHECKING:
    from policy.classify.context import Context, DialectRules

#: The first words of a query.
QUERY_STARTS = frozenset({"SELECT", "WITH", "VALUES", "TABLE"})

_PLACEHOLDERS = {TokenType.NUMBER: "1", TokenType.HEX_STRING: "00", TokenType.BIT_STRING: "0"}


def _normalized(tokens: Sequence[Token]) -> list[Token]:
    """The tokens with every literal's text replaced by a fixed placeholder.

    sqlglot reads some literals (JSON paths, intervals, ...): parsing placeholders keeps
    the tree, and so the verdict, independent of literal values.

    A type name sqlglot does not know before "[" (x::oid[]) it reads as a subscript and
    fails: it gets the name of one it knows. What the type is, is checked on the text
    (`DialectRules.query_findings`), never on the tree's reading of it.
    """
    normalized = []
    for index, token in enumerate(tokens):
        kind = token.token_type
        if kind in LITERAL_TOKEN_TYPES:
            text = _PLACEHOLDERS.get(kind, "s")
        elif (
            kind in (TokenType.VAR, TokenType.OBJECT_IDENTIFIER)
            and 0 < index < len(tokens) - 1
            and tokens[index - 1].token_type is TokenType.DCOLON
            and tokens[index + 1].token_type is TokenType.L_BRACKET
        ):
            kind, text = TokenType.TEXT, "TEXT"
        else:
            normalized.append(token)
            continue
        normalized.append(
            Token(kind, text, token.line, token.col, token.start, token.end, token.comments)
        )
    return normalized


@functools.cache
def _function_parser_names(dialect: str) -> frozenset[str]:
    """Function names sqlglot parses by special rules: its nodes for them carry no position."""
    parser = sqlglot_dialect(dialect).parser_class
    names = set(parser.FUNCTION_PARSERS) | set(parser.NO_PAREN_FUNCTION_PARSERS)
    return frozenset(name.lower() for name in names) - {"case", "any"}


DML_NODES: tuple[type[exp.Expr], ...] = (exp.Insert, exp.Update, exp.Delete, exp.Merge)

#: Nodes a read-only query may contain (functions and operators are checked separately).
_QUERY_NODES: frozenset[type[exp.Expr]] = frozenset(
    {
        exp.Select,
        exp.Union,
        exp.Intersect,
        exp.Except,
        exp.Subquery,
        exp.Values,
        exp.Tuple,
        exp.From,
        exp.Join,
        exp.Where,
        exp.Group,
        exp.Having,
        exp.Order,
        exp.Ordered,
        exp.Limit,
        exp.Offset,
        exp.Fetch,
        exp.Distinct,
        exp.With,
        exp.CTE,
        exp.TableAlias,
        exp.Table,
        exp.Column,
        exp.Identifier,
        exp.Star,
        exp.Literal,
        exp.Boolean,
        exp.Null,
        exp.Placeholder,
        exp.Parameter,
        exp.SessionParameter,
        exp.Alias,
        exp.DataType,
        exp.DataTypeParam,
        exp.Interval,
        exp.Var,
        exp.Window,
        exp.WindowSpec,
        exp.Lateral,
        exp.Bracket,
        exp.Slice,
        exp.Filter,
        exp.WithinGroup,
        exp.IgnoreNulls,
        exp.RespectNulls,
        exp.AtTimeZone,
        exp.Qualify,
        exp.TableSample,
        exp.ColumnDef,
        exp.JSONPath,
        exp.JSONPathRoot,
        exp.JSONPathKey,
        exp.JSONPathSubscript,
        exp.JSONPathWildcard,
        exp.JSONPathSlice,
        exp.JSONPathFilter,
        exp.JSONPathRecursive,
        exp.JSONPathScript,
        exp.JSONPathSelector,
        exp.JSONPathUnion,
        exp.Introducer,
        exp.National,
        exp.HexString,
        exp.BitString,
        exp.ByteString,
        exp.UnicodeString,
        exp.RawString,
        exp.Heredoc,
        exp.PseudoType,
        exp.ObjectIdentifier,
        exp.Pseudocolumn,
        exp.Lambda,  # sqlglot reads PostgreSQL's f(a->'k') as a lambda; its parts are checked
        exp.JSONKeyValue,
        exp.JSONSchema,
        exp.JSONColumnDef,
        exp.IndexTableHint,
        exp.Partition,  # MySQL: t PARTITION (p0)
        exp.LimitOptions,
        exp.Rollup,
        exp.Cube,
        exp.GroupingSets,
    }
)

_GROUPING_NODES: frozenset[type[exp.Expr]] = frozenset({exp.Rollup, exp.Cube, exp.GroupingSets})

#: The parts of INSERT/UPDATE/DELETE/MERGE: a statement containing them is a write anyway
#: (the DML node says so), but what they contain is still checked.
_DML_PART_NODES: frozenset[type[exp.Expr]] = frozenset(
    {exp.Schema, exp.OnConflict, exp.Returning, exp.When, exp.Whens, exp.Set, exp.SetItem}
)

#: Nodes that `EXPLAIN` without ANALYZE may plan: the statement itself does not run.
_PLANNED_NODES: frozenset[type[exp.Expr]] = frozenset({*DML_NODES, exp.Into, exp.Lock})

#: Function-like nodes that stand for syntax, not a call by name: CASE, casts, ARRAY[...],
#: CURRENT_DATE, ..., or a function sqlglot parses by special rules (its name is checked
#: against the allowlist on the tokens; see `_function_parser_names`).
_SYNTAX_FUNCTIONS: frozenset[type[exp.Expr]] = frozenset(
    {
        exp.Case,
        exp.If,
        exp.Cast,
        exp.Extract,
        exp.Trim,
        exp.Substring,
        exp.StrPosition,
        exp.Overlay,
        exp.MatchAgainst,
        exp.JSONTable,
        exp.DecodeCase,
        exp.JSONArrayAgg,
        exp.JSONBExists,
        exp.WeightString,
        exp.XMLElement,
        # What sqlglot builds around or inside functions it knows (TO_DAYS is a DATEDIFF,
        # GROUP_CONCAT holds a CONCAT, date arguments get conversions).
        exp.Concat,
        exp.DateDiff,
        exp.TsOrDsToTimestamp,
        exp.TsOrDsToDate,
        exp.TsOrDsToTime,
        exp.TimeStrToTime,
        exp.Ceil,
        exp.Floor,
        exp.Chr,
        exp.Initcap,
        exp.Normalize,
        exp.Decode,
        exp.JSONObject,
        exp.JSONObjectAgg,
        exp.GroupConcat,
        exp.Array,
        exp.Exists,
        exp.Any,
        exp.All,
        exp.Unnest,
        exp.CurrentDate,
        exp.CurrentTime,
        exp.CurrentTimestamp,
        exp.CurrentUser,
        exp.CurrentRole,
        exp.CurrentSchema,
        exp.CurrentCatalog,
        exp.SessionUser,
        exp.Localtime,
        exp.Localtimestamp,
    }
)


# A word before "(" that no function node accounts for is grammar only where the server's
# grammar reads it so; elsewhere it may call a function of that name (PostgreSQL lets many
# keywords name functions: filter(...), over(...), join(...), show(...)). So each grammar
# word is accepted only after the tokens it follows in that grammar; anything else is
# "could not tell", which is not read. The tree check still sees what sqlglot made of it.
_OPERAND_ENDS = frozenset(
    {
        TokenType.VAR,
        TokenType.IDENTIFIER,
        TokenType.NUMBER,
        TokenType.STRING,
        TokenType.NATIONAL_STRING,
        TokenType.BYTE_STRING,
        TokenType.UNICODE_STRING,
        TokenType.HEREDOC_STRING,
        TokenType.BIT_STRING,
        TokenType.HEX_STRING,
        TokenType.R_PAREN,
        TokenType.R_BRACKET,
        TokenType.STAR,
        TokenType.NULL,
        TokenType.TRUE,
        TokenType.FALSE,
        TokenType.PLACEHOLDER,
        # Keywords that are whole expressions: CASE ... END, CURRENT_DATE, USER.
        TokenType.END,
        TokenType.CURRENT_DATE,
        TokenType.CURRENT_TIME,
        TokenType.CURRENT_TIMESTAMP,
        TokenType.CURRENT_USER,
        TokenType.CURRENT_ROLE,
        TokenType.CURRENT_CATALOG,
        TokenType.CURRENT_SCHEMA,
        TokenType.SESSION_USER,
        TokenType.LOCALTIME,
        TokenType.LOCALTIMESTAMP,
    }
)


def _ends_operand(tokens: Sequence[Token], index: int, names_at: set[int]) -> bool:
    """Whether tokens[index] ends an operand (so a word after it is an operator or a clause).

    sqlglot's tokenizer gives many ordinary names a keyword's token type (name, type, text,
    date, json, comment, ...), so the token type alone does not say it: a token the parsed
    tree holds as a name (`names_at`), or the type name right after `::`, ends one too.
    """
    if index < 0:
        return False
    token = tokens[index]
    return (
        token.token_type in _OPERAND_ENDS
        or index in names_at
        or (
            index >= 1 and tokens[index - 1].token_type is TokenType.DCOLON and bool(word_of(token))
        )
    )


def _is_grammar(
    tokens: Sequence[Token], index: int, rules: DialectRules, names_at: set[int]
) -> bool:
    """Whether the word at tokens[index], followed by "(", is grammar where it stands."""
    word = word_of(tokens[index])
    previous = tokens[index - 1] if index > 0 else None
    if previous is not None and previous.token_type is TokenType.DOT:
        return False  # s.in(...): after a qualifier every word is a function's name
    if " " in word or word in GRAMMAR_ANYWHERE or word in rules.NEVER_FUNCTION_NAMES:
        return True  # "GROUPING SETS (", "ORDER BY (": keyword pairs are grammar
    before = "," if previous is not None and previous.token_type is TokenType.COMMA else ""
    before = before or word_of(previous)
    if word in rules.GRAMMAR_AFTER_OPERAND and _ends_operand(tokens, index - 1, names_at):
        return True
    if (
        word in TYPE_NAMES
        and previous is not None
        and (previous.token_type in (TokenType.DCOLON, TokenType.ALIAS))
    ):
        return True
    return before in rules.GRAMMAR_AFTER_WORD.get(word, ())


def _builtin_operator(written: str, rules: DialectRules) -> bool:
    """Whether OPERATOR(written) names a built-in operator: pg_catalog's, qualified so."""
    schema, dot, symbol = written.partition(".")
    return schema == "pg_catalog" and dot == "." and symbol in rules.BUILTIN_OPERATORS


def _bracketed(sql: str, tokens: Sequence[Token], opening: int) -> str:
    """The text between the ( at tokens[opening] and its ), whitespace taken out."""
    closing = closing_paren(tokens, opening)
    if closing < 0:
        return ""
    return "".join(sql[tokens[opening].end + 1 : tokens[closing].start].split())


def _clause_of(tokens: Sequence[Token], index: int) -> str:
    """The keyword of the clause that tokens[index] is in, at its own bracket depth."""
    depth = 0
    for token in reversed(tokens[:index]):
        kind = token.token_type
        if kind is TokenType.R_PAREN:
            depth += 1
        elif kind is TokenType.L_PAREN:
            if depth == 0:
                return "("
            depth -= 1
        elif depth == 0 and token.token_type is not TokenType.COMMA:
            word = word_of(token)
            if word in _CLAUSES:
                return word
    return ""


_CLAUSES = names("SELECT FROM WHERE HAVING WINDOW LIMIT OFFSET RETURNING VALUES SET ON USING") | {
    "GROUP BY",
    "ORDER BY",
    "PARTITION BY",
}

_SAFE_PARSE_ERROR = re.compile(
    r"Invalid expression / Unexpected token|Expecting [()\[\]]|Expected [A-Za-z ]+"
    r"|Required keyword: '\w+' missing for <class '[\w.]+'>"
)


def expression(context: Context, tokens: list[Token]) -> Verdict:
    """The verdict for evaluating an expression list, as `SELECT <tokens>` would."""
    if not tokens:
        return verdict_of(UNKNOWN, "missing expression")
    select = Token(TokenType.SELECT, "SELECT", 1, 1, tokens[0].start, tokens[0].start, [])
    return classify_query(context, [select, *tokens], synthetic=1)


def classify_query(
    context: Context, tokens: list[Token], *, plan_only: bool = False, synthetic: int = 0
) -> Verdict:
    """A query (SELECT, WITH, VALUES, TABLE, parenthesised), or DML that is only planned.

    `synthetic`: how many leading tokens were made up (not in the text).
    """
    findings: list[Finding] = []
    accounted: set[int] = set()  # indexes of name tokens followed by ( that were checked
    rules = context.rules
    special_names = _function_parser_names(rules.NAME)
    calls = [
        index
        for index in range(synthetic + 1, len(tokens))
        if tokens[index].token_type is TokenType.L_PAREN
    ]
    for index in calls:
        if word_of(tokens[index - 1]).lower() in special_names:
            accounted.add(index - 1)
            findings.extend(call_findings(context, tokens, index - 1))
    refused = rules.query_refusal(tokens)
    if refused is not None:
        return refused
    try:
        trees = (
            sqlglot_dialect(rules.NAME)
            .parser(error_message_context=0)
            .parse(_normalized(tokens), context.sql)
        )
    except ParseError as error:
        description = str(error.errors[0].get("description", "")) if error.errors else ""
        if _SAFE_PARSE_ERROR.fullmatch(description):
            return verdict_of(UNKNOWN, f"could not parse: {description}")
        return verdict_of(UNKNOWN, "could not parse")
    if len(trees) != 1 or trees[0] is None:
        return verdict_of(UNKNOWN, "could not parse as a single query")
    root = trees[0]
    allowed_roots: tuple[type[exp.Expr], ...] = (exp.Query, exp.Values, *DML_NODES)
    if not isinstance(root, allowed_roots):
        return verdict_of(UNKNOWN, f"not understood as a query ({type(root).__name__})")
    index_of = {token.start: index for index, token in enumerate(tokens) if index >= synthetic}
    names_at: set[int] = set()  # indexes of the tokens the tree holds as names
    findings.extend(_tree_findings(context, root, tokens, index_of, accounted, names_at, plan_only))
    findings.extend(rules.query_findings(context.sql, tokens, root, index_of, synthetic))
    # Every name before "(" that no function node accounted for: grammar where it stands,
    # or else checked as a call of that name (sqlglot may have made it something else).
    for index in calls:
        name = index - 1
        if name in accounted or name < synthetic:
            continue
        token = tokens[name]
        word = word_of(token)
        if word in ("ROLLUP", "CUBE") and _clause_of(tokens, name) == "GROUP BY":
            continue  # GROUP BY a, ROLLUP (b)
        if word == "OPERATOR" and _builtin_operator(_bracketed(context.sql, tokens, index), rules):
            continue  # x OPERATOR(pg_catalog.~) y: psql's \d pattern matching
        if token.token_type is TokenType.IDENTIFIER or (
            word and not _is_grammar(tokens, name, rules, names_at)
        ):
            findings.extend(call_findings(context, tokens, name))
    if findings:
        classes = {statement_class for statement_class, _ in findings}
        return Verdict(
            classes.pop() if len(classes) == 1 else UNKNOWN,
            tuple(dict.fromkeys(reason for _, reason in findings)),
        )
    first = word_of(tokens[synthetic]) if len(tokens) > synthetic else ""
    return verdict_of(READ, f"{first or 'query'} only reads data and calls read-safe functions")


def _tree_findings(
    context: Context,
    root: exp.Expr,
    tokens: Sequence[Token],
    index_of: dict[int, int],
    accounted: set[int],
    names_at: set[int],
    plan_only: bool,
) -> list[Finding]:
    findings: list[Finding] = []
    for node in root.walk(prune=lambda node: isinstance(node, exp.Hint)):
        kind = type(node)
        if isinstance(node, exp.Hint):
            continue  # comments to PostgreSQL; MySQL's are checked in `check_optimizer_hints`
        if plan_only and kind in _PLANNED_NODES:
            continue
        if kind is exp.Select and not node.expressions:
            findings.append((UNKNOWN, "could not parse: SELECT without a select list"))
        elif kind in _GROUPING_NODES and not isinstance(node.parent, exp.Group):
            # cube(x) outside GROUP BY is a call of a function named cube
            findings.append((UNKNOWN, f"{kind.__name__.upper()}(...) outside GROUP BY"))
        elif isinstance(node, DML_NODES):
            what = kind.__name__.upper()
            if node is root:
                findings.append((WRITE, f"{what} modifies data"))
            else:
                findings.append((WRITE, f"data-modifying {what} inside the query"))
        elif isinstance(node, exp.Into):
            finding = context.rules.into_finding(node)
            if finding is not None:
                findings.append(finding)
        elif isinstance(node, exp.Lock):
            findings.append((WRITE, "SELECT ... FOR UPDATE/SHARE locks rows"))
        elif isinstance(node, exp.Command):
            findings.append((UNKNOWN, "contains a statement the parser does not model"))
        elif isinstance(node, exp.Operator):
            if not _builtin_operator(str(node.args.get("operator", "")), context.rules):
                findings.append((UNKNOWN, "OPERATOR(...) may call a user-defined function"))
        elif isinstance(node, exp.Identifier):
            parent = node.parent
            position = index_of.get(node.meta.get("start", -1))
            if position is not None:
                names_at.add(position)
            if (
                position is not None
                and node.arg_key == "this"
                and (
                    isinstance(parent, exp.TableAlias)
                    or (isinstance(parent, exp.Table) and isinstance(parent.parent, exp.Schema))
                )
            ):
                accounted.add(position)  # AS v(a, b) or INSERT INTO t(a, b): not calls
        elif (call := _call_index(node, tokens, index_of)) is not None:
            accounted.add(call)
            findings.extend(call_findings(context, tokens, call))
        elif isinstance(node, exp.Func):
            if not (
                isinstance(node, (exp.Binary, exp.Unary, exp.Predicate))
                or kind in _SYNTAX_FUNCTIONS
            ):
                findings.append((UNKNOWN, f"{kind.__name__} is not on the read-safe allowlist"))
        elif not (
            kind in _QUERY_NODES
            or kind in _DML_PART_NODES
            or isinstance(node, (exp.Binary, exp.Unary, exp.Predicate, exp.Connector))
        ):
            findings.append((UNKNOWN, f"{kind.__name__} is not understood"))
    return findings


def _call_index(node: exp.Expr, tokens: Sequence[Token], index_of: dict[int, int]) -> int | None:
    """Index of the name token when `node` was written as name(...), else None."""
    index = index_of.get(node.meta.get("start", -1))
    if index is None or index + 1 >= len(tokens):
        return None
    return index if tokens[index + 1].token_type is TokenType.L_PAREN else None


def call_findings(context: Context, tokens: Sequence[Token], index: int) -> list[Finding]:
    """Whether calling the function named by tokens[index] is read-safe, as written."""
    token = tokens[index]
    quoted = token.token_type is TokenType.IDENTIFIER
    name = token.text if quoted else token.text.lower()
    if quoted:
        # PostgreSQL: "coalesce"(...) is no longer the COALESCE construct but a lookup of a
        # function by that name; MySQL: `lower`(...) is a stored function.
        return [(UNKNOWN, f"quoted function name {name} may name a user-defined function")]
    problem = context.rules.call_problem(tokens, index, name)
    if problem is not None:
        return [(UNKNOWN, problem)]
    if name in context.rules.READ_SAFE_FUNCTIONS:
        return []
    judged = context.rules.argument_findings(context.sql, tokens, index, name)
    if judged is not None:
        return judged
    effect = KNOWN_EFFECTS.get(name)
    if effect is not None:
        return [(effect[0], f"function {name} {effect[1]}")]
    return [(UNKNOWN, f"function {name} is not on the read-safe allowlist")]
