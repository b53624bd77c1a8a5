/** Turns a rider's time expression ("12分钟", "十五分钟", "半小时", "12点半") into minutes from now. */
import * as chrono from 'chrono-node';

const maxEtaMinutes = 180;
const minutesPerDay = 24 * 60;

function inRange(minutes: number): number | undefined {
  return minutes >= 0 && minutes <= maxEtaMinutes ? minutes : undefined;
}

/** Reads a relative expression ("12分钟后"), which does not depend on the time zone. */
function relativeMinutes(text: string, now: Date): number | undefined {
  const first = chrono.zh.hans.parse(text, now, { forwardDate: true })[0];
  if (!first) return undefined;
  return inRange(Math.round((first.start.date().getTime() - now.getTime()) / 60_000));
}

/**
 * Reads a clock time ("12点半") in the platform's time zone. Only its hour and minute are taken
 * from chrono, and a 12-hour reading is preferred when it is the nearer one.
 */
function clockMinutes(text: string, now: Date, timezoneOffsetMinutes: number): number | undefined {
  const first = chrono.zh.hans.parse(text, now)[0];
  if (!first || !first.start.isCertain('hour')) return undefined;
  const target = (first.start.get('hour') ?? 0) * 60 + (first.start.get('minute') ?? 0);
  const local = new Date(now.getTime() + timezoneOffsetMinutes * 60_000);
  const current = local.getUTCHours() * 60 + local.getUTCMinutes();
  const ahead = (target - current + minutesPerDay) % minutesPerDay;
  return inRange(ahead > 12 * 60 ? ahead - 12 * 60 : ahead);
}

/** Reads an English duration ("15 minutes", "about 15 min", "half an hour", "an hour"). */
function englishMinutes(text: string): number | undefined {
  const lower = text.toLowerCase();
  if (/half an? hour/.test(lower)) return 30;
  const minutes = /(\d+)\s*(?:-\s*\d+\s*)?(?:min|mins|minute|minutes)\b/.exec(lower);
  if (minutes) return inRange(Number(minutes[1]));
  const hours = /(\d+|an|one)\s*(?:hour|hours|hr|hrs)\b/.exec(lower);
  if (hours) return inRange(hours[1] === 'an' || hours[1] === 'one' ? 60 : Number(hours[1]) * 60);
  return undefined;
}

/**
 * Returns the ETA in minutes, or undefined when no time expression is found. A bare duration
 * ("10分钟", "15 minutes") is read as "in 10 minutes".
 */
export function parseEtaMinutes(text: string, now: Date, timezoneOffsetMinutes = 480): number | undefined {
  const english = englishMinutes(text);
  if (english !== undefined) return english;

  const cleaned = text.replace(/左右|大概|大约|差不多|还有|还要|估计|预计|内/g, '');
  const duration = cleaned.match(/([0-9]+|[零一二两三四五六七八九十半]+)\s*(个小时|小时|个钟头|钟头|分钟|分)/);
  if (duration) {
    const relative = relativeMinutes(`${duration[0].replace(/分$/, '分钟')}后`, now);
    if (relative !== undefined) return relative;
  }
  return clockMinutes(cleaned, now, timezoneOffsetMinutes);
}
