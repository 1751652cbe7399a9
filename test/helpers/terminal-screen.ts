// What a terminal shows after a program's output, for tests of progress displays: enough of a VT100 for
// what cli-progress writes, so a test can assert on the screen a person would see, not on escape codes.

/**
 * What a terminal of `columns` shows after `text`: the cursor moves, line erases and wrap mode that the
 * bars use (CSI A, B, G, K, J and ?7), lines wrapping at the edge unless wrapping is off.
 */
export function screen(text: string, columns: number): string[] {
  const lines: string[][] = [[]];
  let row = 0;
  let col = 0;
  let wrap = true;
  const line = () => {
    while (lines.length <= row) lines.push([]);
    return lines[row]!;
  };
  const seq = /^\x1b\[(\??)(\d*)([A-Za-z])/;
  for (let i = 0; i < text.length; ) {
    const m = text[i] === '\x1b' ? seq.exec(text.slice(i)) : null;
    if (m) {
      i += m[0].length;
      const n = m[2] === '' ? undefined : Number(m[2]);
      if (m[1] === '?') {
        if (n === 7) wrap = m[3] === 'h';
      } else if (m[3] === 'A') row = Math.max(0, row - (n ?? 1));
      else if (m[3] === 'B') row += n ?? 1;
      else if (m[3] === 'G') col = (n ?? 1) - 1;
      else if (m[3] === 'K') line().splice(n === 2 ? 0 : col);
      else if (m[3] === 'J') {
        line().splice(col);
        lines.splice(row + 1);
      }
      continue;
    }
    const c = text[i++]!;
    if (c === '\r') col = 0;
    else if (c === '\n') {
      // The terminal driver turns a line feed into carriage return and line feed (onlcr).
      row++;
      col = 0;
      line();
    } else {
      if (col >= columns) {
        if (wrap) {
          row++;
          col = 0;
        } else col = columns - 1;
      }
      const l = line();
      while (l.length < col) l.push(' ');
      l[col++] = c;
    }
  }
  return lines.map((l) => l.join('').trimEnd()).filter((l) => l !== '');
}
