"""Course subcommands of ``allnet`` (issue 12): ``allnet course student OUT`` writes the student
edition of every chapter (:func:`allnet_lib.course.write_student_edition`)."""

from __future__ import annotations

from pathlib import Path

from allnet_lib.cli import EXIT_OK, UserError


def register(subparsers) -> None:
    """Add ``course`` (with its ``student`` subcommand) to the ``allnet`` parser."""
    course = subparsers.add_parser(
        "course", help="the classroom edition: student notebooks",
        description="Material for teaching with the book. The book's chapters are the teacher's "
                    "edition (solutions included, nbgrader's solution markers in the answer cells).",
    )
    sub = course.add_subparsers(dest="course_command", metavar="SUBCOMMAND", required=True)
    student = sub.add_parser(
        "student", help="write the student edition of every chapter",
        description="Write every chapter of the book without its solutions: solution text "
                    "removed, each answer cell's solution replaced by `answer = ...` (a stub that "
                    "runs; its check then says 'not answered yet' and gives a hint), everything "
                    "else identical. Same folder layout as book/ (theory/, experiments/, appendix/).",
    )
    student.add_argument("out", metavar="OUT", help="folder to write the student notebooks to")
    student.add_argument("--book", metavar="DIR", default=None,
                         help="the book's sources (default: the book/ folder of this repository)")
    student.add_argument("--overwrite", action="store_true",
                         help="replace student notebooks already in OUT")
    student.set_defaults(func=run_student, spelling={"overwrite": "--overwrite"})


def run_student(args) -> int:
    from allnet_lib import course

    book = Path(args.book) if args.book else course.BOOK_DIR
    if not (book / "_toc.yml").is_file():
        raise UserError(f"no book at {book} (no _toc.yml): pass --book DIR, the folder holding _toc.yml")
    out = Path(args.out)
    if out.resolve() == book.resolve():
        raise UserError(f"OUT ({out}) is the book itself: choose another folder")
    try:
        written = course.write_student_edition(book, out, overwrite=args.overwrite)
    except FileExistsError as error:
        raise UserError(str(error)) from error
    except OSError as error:
        raise UserError(f"cannot write the student edition to {out}: {error}") from error
    for path in written:
        print(path)
    print(f"{len(written)} student notebooks in {out} (solutions removed, answer cells stubbed)")
    return EXIT_OK
