"""A small CEA-608 reader for the real-OBS test: the captions OBS put into an FLV's H.264.

OBS writes its caption SEI after the slice data, which FFmpeg's decoder skips ("Late SEI is
not implemented"), so ``movie=out.flv[out+subcc]`` yields nothing for OBS streams. This reads
the packets with PyAV, finds the ATSC A/53 ``GA94`` cc_data in them and decodes field 1's
pop-on captions: each End Of Caption (EOC) gives the text then on screen, rows joined with
newlines. Only Erase Non-displayed Memory starts a caption afresh (OBS repeats Resume Caption
Loading when a caption spans two SEI messages).
"""

from __future__ import annotations

from pathlib import Path

#: 608 characters that differ from ASCII in the basic set.
_BASIC = {0x2A: "á", 0x5C: "é", 0x5E: "í", 0x5F: "ó", 0x60: "ú", 0x7B: "ç", 0x7C: "÷",
          0x7D: "Ñ", 0x7E: "ñ", 0x7F: "█"}
_SPECIAL = "®°½¿™¢£♪à èâêîôû"
#: Extended characters (channel 1: 0x12 / 0x13 then 0x20..0x3f); each replaces the basic
#: character sent before it as a fallback.
_EXTENDED = {0x12: "ÁÉÓÚÜü‘¡*'—©℠•“”ÀÂÇÈÊËëÎÏïÔÙùÛ«»",
             0x13: "ÃãÍÌìÒòÕõ{}\\^_|~ÄäÖöß¥¤¦ÅåØø┌┐└┘"}
_GA94 = b"GA94\x03"


def _cc_triples(payload: bytes) -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = []
    start = 0
    while (i := payload.find(_GA94, start)) >= 0:
        flags = payload[i + 5]
        count = flags & 0x1F
        body = payload[i + 7: i + 7 + 3 * count]
        for k in range(0, len(body) - 2, 3):
            out.append((body[k], body[k + 1], body[k + 2]))
        start = i + 5
    return out


def captions(path: Path | str) -> list[str]:
    """The pop-on captions shown in the file's video, in order."""
    import av

    shown: list[str] = []
    buffer: list[str] = []
    last_control: tuple[int, int] | None = None
    with av.open(str(path)) as container:
        for packet in container.demux(video=0):
            for marker, b1, b2 in _cc_triples(bytes(packet)):
                if marker & 0x07 != 0x04:  # cc_valid, field 1 only
                    continue
                c1, c2 = b1 & 0x7F, b2 & 0x7F
                if c1 == 0 and c2 == 0:
                    continue
                if 0x10 <= c1 <= 0x1F:
                    if last_control == (c1, c2):
                        last_control = None  # the doubled control code
                        continue
                    last_control = (c1, c2)
                    if c1 in (0x14, 0x1C) and c2 == 0x2F:  # end of caption: flip memories
                        shown.append("".join(buffer).strip())
                    elif c1 in (0x14, 0x1C) and c2 == 0x2E:  # erase non-displayed memory
                        buffer = []
                    elif c1 in (0x11, 0x19) and 0x30 <= c2 <= 0x3F:
                        buffer.append(_SPECIAL[c2 - 0x30])
                    elif c1 in (0x12, 0x13, 0x1A, 0x1B) and 0x20 <= c2 <= 0x3F:
                        if buffer and buffer[-1] != "\n":
                            buffer.pop()  # the fallback character sent before it
                        buffer.append(_EXTENDED[0x12 + (c1 & 1)][c2 - 0x20])
                    elif 0x40 <= c2 <= 0x7F and buffer and buffer[-1] != "\n":
                        buffer.append("\n")  # a preamble address code: a new row
                    continue
                last_control = None
                for c in (c1, c2):
                    if c >= 0x20:
                        buffer.append(_BASIC.get(c, chr(c)))
    return shown
