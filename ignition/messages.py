"""Ignition's validation messages, word for word.

Users search for these strings and scripts grep for them, so they follow the wording of
Ignition's ``config/shared/errors`` package and of ``ignition-validate`` 2.14.
"""

INVALID = "config is not valid"
EMPTY = "not a config (empty)"
INVALID_VERSION = "invalid config version (couldn't parse)"
UNKNOWN_VERSION = "unsupported config version"

COMPRESSION_INVALID = "invalid compression method"
FILE_USED_SYMLINK = "file path includes link in config"
DIRECTORY_USED_SYMLINK = "directory path includes link in config"
LINK_USED_SYMLINK = "link path includes link in config"
DISK_DEVICE_REQUIRED = "disk device is required"
OVERWRITE_AND_NIL_SOURCE = "overwrite must be false if source is unspecified"
FILESYSTEM_INVALID_FORMAT = "invalid filesystem format"
LABEL_NEEDS_FORMAT = "filesystem must specify format if label is specified"
FORMAT_NIL_WITH_OTHERS = "format cannot be empty when path, label, uuid, or options are specified"
FILE_ILLEGAL_MODE = "illegal file mode"
BOTH_ID_AND_NAME = "cannot set both id and name"
PARTITION_LABEL_TOO_LONG = "partition labels may not exceed 36 characters"
GUID_FORM = 'doesn\'t match the form "01234567-89AB-CDEF-EDCB-A98765432101"'
LABEL_CONTAINS_COLON = "partition label will be truncated to text before the colon"
NO_PATH = "path not specified"
PATH_RELATIVE = "path not absolute"
DIRTY_PATH = "path is not fully simplified"
INVALID_SYSTEMD_EXT = "invalid systemd unit extension"
INVALID_DROPIN_EXT = "invalid systemd drop-in extension"
INVALID_SCHEME = "invalid url scheme"
INVALID_URL = "unable to parse url"
HASH_MALFORMED = "malformed hash specifier"
HASH_WRONG_SIZE = "incorrect size for hash sum"
HASH_UNRECOGNIZED = "unrecognized hash function"
DUPLICATE = "duplicate entry defined"
SOURCE_REQUIRED = "source is required"
LINK_TARGET_REQUIRED = "link target is required"
HEADERS_WRONG_SCHEME = "cannot use HTTP headers with this source scheme"
HEADER_NAME_EMPTY = "HTTP header name can't be empty"
PATH_CONFLICTS_SYSTEMD = "path conflicts with systemd unit or dropin"
UNRECOGNIZED_RAID_LEVEL = "unrecognized raid level"
SPECIAL_MODE_BITS_OLD = (
    "setuid/setgid/sticky bits are not supported in spec versions older than 3.4.0"
)
SPECIAL_MODE_BITS = (
    "setuid/setgid/sticky bits are not supported or functional in spec versions older "
    "than 3.6.0"
)
FS_LABEL_LIMITS = {"ext4": 16, "btrfs": 256, "xfs": 12, "swap": 15, "vfat": 11}


def fs_label_too_long(fmt: str) -> str:
    return (
        f"filesystem labels cannot be longer than {FS_LABEL_LIMITS[fmt]} characters "
        f"when using {fmt}"
    )


def no_install_section(unit: str) -> str:
    return f'unit "{unit}" is enabled, but has no install section so enable does nothing'


def unused_key(key: str) -> str:
    return f"Unused key {key}"
