"""allnet_lib.labels: class order and the C-NMC file-name convention, edge cases included."""

import pytest

from allnet_lib.labels import CLASSES, CellName, index_to_label, label_to_index, parse_cnmc_name


def test_class_order_makes_all_the_positive_class():
    assert CLASSES == ("hem", "all")
    assert label_to_index("all") == 1 and label_to_index("hem") == 0
    assert label_to_index(" ALL ") == 1  # case and spaces do not matter
    assert index_to_label(1) == "all" and index_to_label(0) == "hem"


def test_unknown_label_names_the_label_and_the_choices():
    with pytest.raises(ValueError, match=r"'aml'.*hem.*all"):
        label_to_index("aml")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("UID_57_29_1_all.bmp", CellName("57", 29, 1, "all", "bmp")),
        ("UID_H3_2_1_hem.bmp", CellName("H3", 2, 1, "hem", "bmp")),
        ("UID_h3_2_1_hem.bmp", CellName("H3", 2, 1, "hem", "bmp")),  # the real lower-case subject
        ("UID_H10_117_3_hem.png", CellName("H10", 117, 3, "hem", "png")),  # re-encoded copies
        ("UID_11_10_1_ALL.BMP", CellName("11", 10, 1, "all", "bmp")),  # upper-case label/extension
        ("UID_1_01_02_all.jpg", CellName("1", 1, 2, "all", "jpg")),  # leading zeros are numbers
    ],
)
def test_parse_valid_names(name, expected):
    assert parse_cnmc_name(name) == expected


def test_h3_and_H3_are_the_same_subject():
    assert parse_cnmc_name("UID_h3_1_1_hem.bmp").subject == parse_cnmc_name("UID_H3_1_1_hem.bmp").subject


@pytest.mark.parametrize("name", ["UID_H3_1_1_all.bmp", "UID_3_1_1_hem.bmp", "UID_h3_1_1_all.bmp"])
def test_h_prefix_must_match_the_class(name):
    with pytest.raises(ValueError) as error:
        parse_cnmc_name(name)
    assert name in str(error.value) and "does not match class" in str(error.value)


@pytest.mark.parametrize(
    "name",
    [
        "1.bmp",  # a numbered preliminary-test file: needs the label CSV
        "UID_57_29_all.bmp",  # a field missing
        "UID_57_x_1_all.bmp",  # image number not a number
        "UID_57_29_1_aml.bmp",  # unknown class
        "UID_57_29_1_all",  # no extension
        "UID_HH3_1_1_hem.bmp",  # two H
        "UID_57_29_1_all.bmp.part",  # an unfinished download
        "fold_0/all/UID_57_29_1_all.bmp",  # a path, not a file name
        "",
    ],
)
def test_bad_names_raise_with_the_name_and_an_example(name):
    with pytest.raises(ValueError) as error:
        parse_cnmc_name(name)
    message = str(error.value)
    assert repr(name) in message and "UID_57_29_1_all.bmp" in message
