import { describe, expect, it } from 'vitest';
import { parseEtaMinutes } from '../../agents/eta.ts';

// 12:00 in China Standard Time (UTC+8).
const noon = new Date('2026-12-04T04:00:00Z');

describe('parseEtaMinutes', () => {
  it.each([
    ['12分钟', 12],
    ['大概十五分钟吧', 15],
    ['半小时', 30],
    ['20分钟左右', 20],
    ['马上到，3分钟', 3],
    ['一个小时', 60],
    ['二十五分钟', 25],
    ['还有5分', 5],
    ['12点半到', 30],
    ['1点到', 60],
    ['Stuck in traffic, about 15 minutes', 15],
    ['in 7 min', 7],
    ['half an hour', 30],
    ['an hour', 60],
  ])('reads %s as %i minutes', (text, minutes) => {
    expect(parseEtaMinutes(text, noon)).toBe(minutes);
  });

  it('returns undefined without a time', () => {
    expect(parseEtaMinutes('路上堵车', noon)).toBeUndefined();
  });

  it('rejects an ETA past three hours', () => {
    expect(parseEtaMinutes('5个小时', noon)).toBeUndefined();
  });
});
